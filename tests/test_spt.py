"""The two-stage self-pretraining recipe: experiment=spt/<data> pretrains, then fine-tunes from the pretrained
encoder, each stage in its own sub-directory of one run directory, with one metrics.json holding both."""

import json
from pathlib import Path

import pytest
import torch

from longdoc.config import ConfigError
from longdoc.train import train

TINY_STAGES = ["stages.pretrain.trainer.max_steps=3", "stages.finetune.trainer.max_steps=3",
               "trainer.val_check_interval=3", "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0",
               "trainer.accelerator=cpu"]


@pytest.mark.parametrize("attention", ["lsh", "local_global"])
def test_spt_listops_runs_both_stages_into_one_metrics_json(compose_cfg, attention):
    cfg = compose_cfg("experiment=spt/listops", f"attention={attention}", *TINY_STAGES)
    results = train(cfg)
    out = Path(cfg.paths.output_dir)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == pytest.approx(results)
    assert "pretrain/val/bpt" in saved and "finetune/test/acc" in saved and 0 <= saved["finetune/test/acc"] <= 1
    pre = torch.load(out / "pretrain" / "checkpoints" / "last.ckpt", weights_only=True)
    assert pre["global_step"] == 3 and pre["hyper_parameters"]["task"] == "mlm"
    ft = torch.load(out / "finetune" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ft["global_step"] == 3 and ft["hyper_parameters"]["task"] == "classification"
    assert ft["hyper_parameters"]["model"]["init_from"] == str(out / "pretrain")
    from longdoc.evaluation.report import read_run

    row = read_run(out)  # evaluate.py mode=lra_table: a self-pretrained row beside the from-scratch ones
    assert row.row.endswith("+ SPT (ours)") and row.task == "ListOps" and row.value == pytest.approx(
        100 * saved["finetune/test/acc"])
    # a rerun (a requeued job) finds both stages finished and trains nothing
    again = train(compose_cfg("experiment=spt/listops", f"attention={attention}", *TINY_STAGES))
    assert again == pytest.approx(results)


def test_spt_presets_compose_and_a_bad_stage_fails_before_any_stage(compose_cfg):
    from longdoc.train import stage_config, validate_config

    for preset in ("spt/listops", "spt/stdlib_packages"):
        cfg = compose_cfg(f"experiment={preset}", tiny=False)
        pre = stage_config(cfg, "pretrain", "/tmp/x/pretrain", None)
        validate_config(pre)
        assert pre.task == "mlm" and pre.optimized_metric == "val/bpt"
        fin = stage_config(cfg, "finetune", "/tmp/x/finetune", "/tmp/x/pretrain")
        assert fin.task is None and fin.optimized_metric == "val/acc" and fin.model.init_from == "/tmp/x/pretrain"
    with pytest.raises(ConfigError, match=r"scheduler.decay='linear' is unknown: choose one of \['cosine', 'rsqrt', "):
        validate_config(compose_cfg("scheduler.decay=linear"))
    bad = compose_cfg("experiment=spt/listops", "+stages.finetune.optimizer.lr=-1", *TINY_STAGES)
    with pytest.raises(ConfigError, match="optimizer.lr must be > 0"):
        train(bad)
    assert not (Path(bad.paths.output_dir) / "pretrain").exists()  # nothing trained
    with pytest.raises(ConfigError, match="stage=finetune needs model.init_from"):
        train(compose_cfg("experiment=spt/listops", "stage=finetune", *TINY_STAGES))


# The LRA-size presets against the settings of the authors' configs (github.com/IdoAmos/not-from-scratch,
# configs/experiment/lra/transformer-lra-<task>{-mlm,}.yaml; masking ratios from the paper's section 2), as
# (depth, d_model, n_heads, d_ff, mask rate, pretrain: batch, warm-up, epochs, steps, lr; finetune: the same); the
# learning rates from the paper's Table 4 (appendix C.1)
AMOS_SETTINGS = {
    "text": (6, 512, 8, 2048, 0.15, (32, 5000, 32, -1, 5e-4), (32, 2000, None, 50000, 1e-4)),
    "retrieval": (4, 128, 4, 512, 0.15, (32, 2000, 32, -1, 5e-3), (32, 5000, 32, -1, 5e-4)),
    "image": (3, 64, 4, 128, 0.5, (32, 2500, 50, -1, 1e-3), (50, 2000, 200, -1, 1e-3)),
    "pathfinder": (4, 128, 8, 128, 0.5, (32, 2500, 50, -1, 1e-3), (32, 5000, 200, -1, 5e-4)),
}


@pytest.mark.parametrize("task", sorted(AMOS_SETTINGS))
def test_lra_spt_presets_compose_with_the_papers_settings(compose_cfg, task):
    from longdoc.config import check_config
    from longdoc.train import stage_config, validate_config

    depth, d_model, n_heads, d_ff, mask_rate, pre_s, fin_s = AMOS_SETTINGS[task]
    cfg = compose_cfg(f"experiment=spt/{task}", "attention=local_global", tiny=False)
    pre = stage_config(cfg, "pretrain", "/tmp/x/pretrain", None)
    validate_config(pre)  # builds the data module and the model: no data is read
    fin = stage_config(cfg, "finetune", "/tmp/x/finetune", "/tmp/x/pretrain")
    check_config(fin)
    for stage, (batch, warmup, epochs, steps, lr) in ((pre, pre_s), (fin, fin_s)):
        assert stage.optimizer.lr == pytest.approx(lr)
        assert (stage.model.depth, stage.model.d_model, stage.model.n_heads, stage.model.d_ff) == (
            depth, d_model, n_heads, d_ff)
        assert stage.model.dropout == 0.0 and stage.attention.dropout == 0.0
        assert stage.data.batch_size == batch and stage.scheduler.warmup_steps == warmup
        assert stage.trainer.max_steps == steps and (epochs is None or stage.trainer.max_epochs == epochs)
    assert pre.task == "mlm" and pre.mlm.mask_rate == mask_rate and pre.scheduler.decay == "constant"
    assert fin.task is None and fin.model.init_from == "/tmp/x/pretrain"


@pytest.mark.slow
def test_spt_recipe_under_ddp_with_reversible_mixed_layers(tmp_path, data_dir):
    """The whole recipe in 2 real DDP processes (gloo), reversible blocks alternating local_global and lsh: both
    stages finish in one run directory, the replicas agree after each stage, and the fine-tuning stage starts from
    the pretrained encoder (its checkpoint's encoder tensors differ from the pretrained ones only by its own steps)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    run_dir = tmp_path / "logs" / "run"
    cmd = [sys.executable, "train.py", "experiment=spt/listops", "trainer=ddp_cpu", "model.reversible=true",
           "model.depth=2", "model.attention_layers=[local_global,lsh]", f"hydra.run.dir={run_dir}",
           f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={data_dir}", "data.num_train=128", "data.num_val=32",
           "data.num_test=32", "data.min_length=10", "data.max_length=40", "data.batch_size=16", "model.d_model=32",
           "model.n_heads=2", "model.d_ff=64", "stages.pretrain.trainer.max_steps=4",
           "stages.finetune.trainer.max_steps=4", "trainer.val_check_interval=4", "callbacks.progress_bar=null",
           "trainer.enable_progress_bar=false", "callbacks.model_summary=null"]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "[rank: 1]" in out, "a second process really ran"
    assert out.count("DDP replicas: max |param(rank r) - param(rank 0)| = 0 over") == 2, out[-4000:]
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert "pretrain/val/bpt" in saved and "finetune/test/acc" in saved
    pre = torch.load(run_dir / "pretrain" / "checkpoints" / "last.ckpt", weights_only=True)
    ft = torch.load(run_dir / "finetune" / "checkpoints" / "last.ckpt", weights_only=True)
    assert pre["global_step"] == 4 and ft["global_step"] == 4
    assert ft["hyper_parameters"]["model"]["attention_layers"] == ["local_global", "lsh"]
    assert ft["hyper_parameters"]["model"]["reversible"] is True
    # the fine-tuned encoder is the pretrained one moved by 4 small steps, not a fresh initialisation
    enc = [k for k in pre["state_dict"] if k.startswith("net.encoder.blocks.") and k.endswith("weight")]
    assert enc
    for k in enc:
        p, f = pre["state_dict"][k].float(), ft["state_dict"][k].float()
        assert (f - p).norm() < 0.2 * p.norm(), k


@pytest.mark.slow
def test_spt_benchmark_runs_both_arms_and_tabulates_their_metrics(tmp_path, data_dir):
    """benchmarks/spt.py at toy size: the scratch arm trains 2 S steps, the spt arm S + S, and the table's difference
    is the one between the two runs' own metrics.json files."""
    import csv
    import subprocess
    import sys

    from .conftest import TINY_DATA, TINY_MODEL

    root = Path(__file__).resolve().parents[1]
    runs, out = tmp_path / "runs", tmp_path / "docs"
    cmd = [sys.executable, str(root / "benchmarks" / "spt.py"), "--data", "listops", "--attentions", "full",
           "--steps", "2", "--runs", str(runs), "--out", str(out), *TINY_DATA, *TINY_MODEL,
           f"paths.data_dir={data_dir}", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
           "trainer.num_sanity_val_steps=0", "callbacks.progress_bar=null", "callbacks.model_summary=null"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    scratch = json.loads((runs / "listops_full" / "scratch" / "metrics.json").read_text())
    spt = json.loads((runs / "listops_full" / "spt" / "metrics.json").read_text())
    assert torch.load(runs / "listops_full" / "scratch" / "checkpoints" / "last.ckpt",
                      weights_only=True)["global_step"] == 4
    assert torch.load(runs / "listops_full" / "spt" / "finetune" / "checkpoints" / "last.ckpt",
                      weights_only=True)["global_step"] == 2
    rows = list(csv.DictReader(open(out / "spt.csv")))
    assert [r["arm"] for r in rows] == ["scratch", "spt"]
    assert float(rows[0]["test_acc"]) == pytest.approx(scratch["test/acc"])
    assert float(rows[1]["test_acc"]) == pytest.approx(spt["finetune/test/acc"])
    diff = 100 * (spt["finetune/test/acc"] - scratch["test/acc"])
    assert f"| {diff:+.1f} |" in (out / "spt.md").read_text() and (out / "spt.png").stat().st_size > 0
