"""Sweeps with the real engines: Optuna trials tune on validation (never test), a multirun with a dozen long
overrides starts with short job directories, early stopping stops on the optimized metric."""

import json
import subprocess
import sys

import pytest
import yaml

from longdoc.resolvers import SHORT_DIRNAME_CHARS, metric_direction, metric_mode, run_id, short_dirname
from longdoc.train import train
from tests.lightning.runs import ROOT, clean_env

TINY = ["data.num_train=64", "data.num_val=32", "data.num_test=16", "data.min_length=10", "data.max_length=30",
        "data.batch_size=16", "model.d_model=16", "model.n_heads=2", "model.d_ff=32", "model.depth=1",
        "trainer.accelerator=cpu", "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null", "callbacks.model_summary=null", "trainer.max_time=null"]


@pytest.mark.slow
def test_optuna_trials_tune_on_validation(tmp_path, data_dir):
    sweep_dir = tmp_path / "sweep"
    res = subprocess.run([sys.executable, "train.py", "-m", "hparams_search=optuna_lsh", "hydra.sweeper.n_trials=3",
                          "hydra.sweeper.sampler.n_startup_trials=2", "trainer.max_steps=6", "trainer.max_epochs=-1",
                          "trainer.val_check_interval=2", "trainer.check_val_every_n_epoch=null", *TINY,
                          f"hydra.sweep.dir={sweep_dir}", f"paths.data_dir={data_dir}"],
                         cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    trials = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / "metrics.json").is_file())
    assert len(trials) == 3, list(sweep_dir.iterdir())
    best_val = [json.loads((t / "metrics.json").read_text())["val/acc_best"] for t in trials]
    tests = [json.loads((t / "metrics.json").read_text())["test/acc"] for t in trials]
    result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert result["name"] == "optuna" and result["best_value"] == max(best_val)  # maximize val/acc, the best trial
    overrides = [yaml.safe_load((t / ".hydra" / "overrides.yaml").read_text()) for t in trials]
    assert all(any(o.startswith("attention.n_hashes=") for o in ov) for ov in overrides)
    assert set(result["best_params"]) == {"optimizer.lr", "optimizer.weight_decay", "model.dropout",
                                          "attention.n_hashes", "attention.bucket_size"}
    # each trial's best val/acc is one of its validations, not a test number
    for t in trials:
        rows = (t / "csv" / "metrics.csv").read_text().splitlines()
        header = rows[0].split(",")
        vals = [float(r.split(",")[header.index("val/acc")]) for r in rows[1:] if r.split(",")[header.index("val/acc")]]
        assert json.loads((t / "metrics.json").read_text())["val/acc_best"] == pytest.approx(max(vals))
    assert tests  # the trials still test their best checkpoint, for the record


@pytest.mark.slow
def test_multirun_with_a_dozen_long_overrides_has_short_job_dirs(tmp_path, data_dir):
    long = [f"data.path=null", "data.cache_dir=" + str(data_dir / ("cache_" + "x" * 40)),
            "optimizer.weight_decay=0.0123456789", "optimizer.eps=1.2345e-08",
            "scheduler.warmup_ratio=0.123456789", "scheduler.min_lr_ratio=0.0987654321", "model.dropout=0.0123456",
            "seed=1234567", "trainer.gradient_clip_val=0.987654321", "attention.attention_window=8",
            "attention.attention_dilation=1", "position=learned"]
    everything = long + TINY + ["optimizer.lr=0.000123456789", "trainer.fast_dev_run=true"]
    assert len(",".join(everything)) > 255  # Hydra's <num>_<override_dirname> would be too long a file name
    sweep_dir = tmp_path / "sweep"
    res = subprocess.run([sys.executable, "train.py", "-m", "optimizer.lr=0.000123456789,0.000234567891", *long, *TINY,
                          "trainer.fast_dev_run=true", f"hydra.sweep.dir={sweep_dir}", f"paths.data_dir={data_dir}"],
                         cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [j.split("_", 1)[0] for j in jobs] == ["0", "1"] and all(len(j) <= SHORT_DIRNAME_CHARS + 12 for j in jobs)
    assert len(set(jobs)) == 2  # the hash tells the jobs apart
    for j in jobs:
        saved = yaml.safe_load((sweep_dir / j / ".hydra" / "overrides.yaml").read_text())
        assert set(long) <= set(saved) and len(saved) >= 12  # the full overrides are kept beside each job
        assert (sweep_dir / j / "metrics.json").is_file()


def test_resolvers_against_hand_computed_values(monkeypatch):
    assert short_dirname("a=1,b=2") == "a=1,b=2"
    assert short_dirname("data.path=/x/y") == "data.path=_x_y"
    text = "k" * 100
    import hashlib
    assert short_dirname(text) == "k" * SHORT_DIRNAME_CHARS + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    assert (metric_mode("val/acc"), metric_mode("val/bpb"), metric_mode("val/loss")) == ("max", "min", "min")
    assert metric_direction("val/acc") == "maximize" and metric_direction("val/bpb") == "minimize"
    assert (metric_mode("val/f1"), metric_mode("val/f1_micro"), metric_mode("val/exact_match")) == ("max",) * 3
    with pytest.raises(ValueError, match="optimized_metric='val/auroc': its direction is unknown"):
        metric_mode("val/auroc")
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "991")
    assert run_id() == "slurm-991"  # a requeued SLURM job keeps its id, hence its run directory
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "990")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert run_id() == "slurm-990_3"
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun's default: not shared, use the time
    assert run_id()[:2] == "20"


def test_default_run_dir_inside_slurm_is_the_job_id(compose_cfg, monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "src" / "longdoc" / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["paths.log_dir=/logs"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert cfg.hydra.run.dir == "/logs/train/runs/slurm-4242"


def test_early_stopping_stops_on_the_optimized_metric(compose_cfg):
    cfg = compose_cfg("callbacks=early_stopping", "callbacks.early_stopping.patience=1",
                      "callbacks.early_stopping.min_delta=1.0",  # accuracy cannot improve by 1: stop after 2 checks
                      "trainer.max_epochs=6", "trainer.limit_train_batches=2", "trainer.num_sanity_val_steps=0",
                      "trainer.accelerator=cpu", "test=false")
    assert cfg.callbacks.early_stopping.monitor == "val/acc" and cfg.callbacks.early_stopping.mode == "max"
    metrics = train(cfg)
    import torch
    from pathlib import Path

    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 4  # stopped after epoch 2 of 6
    assert "val/acc_best" in metrics
