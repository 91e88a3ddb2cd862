"""Experiment tracking: wandb offline (no API key) and TensorBoard runs read back from disk."""

import glob
import os
from pathlib import Path

import pytest

from longdoc.train import train
from tests.lightning.wandb_offline import history_and_config

SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
         "trainer.log_every_n_steps=1", "trainer.accelerator=cpu", "trainer.num_sanity_val_steps=0",
         "callbacks.throughput.log_every_n_steps=1"]


@pytest.mark.slow
def test_wandb_offline_run_has_config_and_metric_history(compose_cfg, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(Path(compose_cfg("attention=lsh").paths.output_dir).parent))  # no ~/.netrc login
    cfg = compose_cfg("logger=wandb", "attention=lsh", *SHORT)
    train(cfg)
    files = glob.glob(os.path.join(cfg.paths.output_dir, "wandb", "offline-run-*", "run-*.wandb"))
    assert len(files) == 1, "offline without an API key: one local run to `wandb sync` later"
    history, config = history_and_config(files[0])
    assert config["attention"]["name"] == "lsh" and config["model"]["d_model"] == 32
    keys = set().union(*history)
    assert {"train/loss_step", "train/tokens_per_sec", "train/peak_rss_gib", "val/acc", "test/acc"} <= keys, keys
    losses = [row["train/loss_step"] for row in history if "train/loss_step" in row]
    assert len(losses) == 3 and all(0 < x < 10 for x in losses)


@pytest.mark.slow
def test_tensorboard_and_csv_log_the_same_metrics(compose_cfg):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    import csv

    cfg = compose_cfg("logger=many", *SHORT)
    train(cfg)
    events = glob.glob(os.path.join(cfg.paths.output_dir, "tensorboard", "**", "events.out.tfevents.*"), recursive=True)
    assert events
    acc = EventAccumulator(os.path.dirname(events[0]))
    acc.Reload()
    tb_tags = set(acc.Tags()["scalars"])
    with open(os.path.join(cfg.paths.output_dir, "csv", "metrics.csv"), newline="") as fh:
        csv_keys = set(next(csv.reader(fh))) - {"step", "epoch"}
    assert {"train/loss_step", "val/acc", "test/acc", "train/tokens_per_sec"} <= tb_tags
    assert csv_keys <= tb_tags | {"epoch"}, csv_keys - tb_tags
    assert [e.step for e in acc.Scalars("train/loss_step")] == [0, 1, 2]


@pytest.mark.cuda
def test_throughput_and_cuda_peak_memory_on_gpu(compose_cfg):
    import csv

    cfg = compose_cfg("trainer=gpu", *SHORT, "test=false")
    train(cfg)
    with open(os.path.join(cfg.paths.output_dir, "csv", "metrics.csv"), newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train/tokens_per_sec")]
    assert len(rows) == 3
    assert all(float(r["train/tokens_per_sec"]) > 0 and float(r["train/peak_mem_gib"]) > 0 for r in rows)
