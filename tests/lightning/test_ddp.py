"""Real 2-process DDP on CPU (gloo), with reversible layers and LSH attention."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ddp_cpu_two_processes_reversible_lsh(tmp_path, data_dir):
    run_dir = tmp_path / "logs" / "run"
    cmd = [sys.executable, "train.py", "trainer=ddp_cpu", "model.reversible=true", "attention=lsh",
           f"hydra.run.dir={run_dir}", f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={data_dir}",
           "data.num_train=128", "data.num_val=32", "data.num_test=32", "data.min_length=10", "data.max_length=40",
           "data.batch_size=16", "model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.dropout=0.1",
           "trainer.max_epochs=1", "trainer.log_every_n_steps=1", "callbacks.progress_bar=null",
           "trainer.enable_progress_bar=false", "callbacks.model_summary=null"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    # one run directory for both ranks, one set of logs, a checkpoint
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["run"]
    assert len(list(run_dir.rglob("metrics.csv"))) == 1 and (run_dir / "metrics.json").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert "[rank: 1]" in out, "a second process really ran"
    # identical parameters on both ranks after training (all-gathered by DDPConsistencyCheck)
    assert "DDP replicas: max |param(rank r) - param(rank 0)| = 0 over" in out and "and 2 ranks" in out
    # each rank trained on its own shard: 128 samples / 16 per batch / 2 ranks = 4 steps
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4

    # rerun in the same directory with a second epoch: both ranks resume (ckpt_path=auto), no rank logs an error
    res = subprocess.run([*cmd, "trainer.max_epochs=2"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "--- Logging error ---" not in out and "ckpt_path=auto: resuming from" in out, out[-4000:]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 8


@pytest.mark.slow
def test_ddp_test_accuracy_counts_every_sample_once(tmp_path, data_dir, compose_cfg):
    """37 test samples in batches of 16 over 2 ranks: rank 1 repeats a batch to keep step with rank 0; the repeats
    count nowhere, so the 2-process test accuracy equals a 1-process evaluation of the same checkpoint exactly."""
    import json

    from longdoc.evaluate import evaluate

    run_dir = tmp_path / "logs" / "run"
    cmd = [sys.executable, "train.py", "trainer=ddp_cpu", "attention=full", f"hydra.run.dir={run_dir}",
           f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={data_dir}", "data.num_train=64", "data.num_val=37",
           "data.num_test=37", "data.min_length=10", "data.max_length=40", "data.batch_size=16", "model.d_model=32",
           "model.n_heads=2", "model.d_ff=64", "trainer.max_epochs=2", "callbacks.progress_bar=null",
           "trainer.enable_progress_bar=false", "callbacks.model_summary=null"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "ListOps test: 1 of this rank's 2 batches repeat samples" in out  # rank 1's log line
    ddp = json.loads((run_dir / "metrics.json").read_text())
    ev = evaluate(compose_cfg(f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}", f"paths.output_dir={tmp_path / 'ev'}",
                              "trainer.accelerator=cpu", config_name="evaluate"))
    assert ddp["test/acc"] == ev["test/acc"]
    correct = round(ev["test/acc"] * 37)
    assert abs(ev["test/acc"] - correct / 37) < 1e-6  # a count out of 37, not out of 48 padded slots
