"""End to end: train.py runs fast_dev_run for each attention; evaluate.py scores a real checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longdoc.evaluate import evaluate
from longdoc.train import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("attention", ["full", "lsh", "local_global"])
def test_fast_dev_run_each_attention(compose_cfg, attention, tmp_path):
    cfg = compose_cfg(f"attention={attention}", "trainer.fast_dev_run=true", "trainer.accelerator=cpu")
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert torch.isfinite(torch.tensor(metrics["train/loss_step"] if "train/loss_step" in metrics else metrics["test/loss"]))
    assert json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())["test/acc"] == metrics["test/acc"]


def test_train_then_evaluate_checkpoint(compose_cfg, tmp_path):
    cfg = compose_cfg("attention=lsh", "trainer.max_epochs=1", "trainer.limit_train_batches=4",
                      "trainer.limit_val_batches=2", "trainer.accelerator=cpu", "trainer.num_sanity_val_steps=0")
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    best = out / "checkpoints" / "best.ckpt"
    assert best.is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "csv" / "metrics.csv").is_file() and (out / "config.yaml").is_file()
    ev_cfg = compose_cfg(f"ckpt_path={best}", f"paths.output_dir={tmp_path / 'eval'}", "trainer.accelerator=cpu",
                         "attention.n_hashes=4", config_name="evaluate")
    ev = evaluate(ev_cfg)
    assert 0.0 <= ev["test/acc"] <= 1.0 and 0.0 < ev["majority_acc"] < 1.0
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["test/acc"] == ev["test/acc"] and saved["ckpt_path"] == str(best)
    # the test split is the same, so the best checkpoint scores what train.py reported for it
    assert abs(ev["test/acc"] - metrics["test/acc"]) < 0.15  # n_hashes differs (4 vs 2): close, not equal


def test_evaluate_missing_checkpoint_is_a_clear_error(compose_cfg, tmp_path):
    cfg = compose_cfg(f"ckpt_path={tmp_path / 'nope.ckpt'}", config_name="evaluate")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate(cfg)


@pytest.mark.slow
def test_cli_train_and_bad_config(tmp_path, data_dir):
    """The real command line: a bad override fails fast with the key named; a tiny run succeeds."""
    env_args = [f"paths.log_dir={tmp_path}", f"paths.data_dir={data_dir}"]
    bad = subprocess.run([sys.executable, "train.py", "model.n_heads=3", *env_args], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "model.n_heads=3 does not divide model.d_model=128" in bad.stderr + bad.stdout
    ok = subprocess.run([sys.executable, "train.py", "trainer.fast_dev_run=true", "data.num_train=100",
                         "data.num_val=20", "data.num_test=20", "data.max_length=40", "data.min_length=10",
                         *env_args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert list(tmp_path.glob("train/runs/*/metrics.json"))


@pytest.mark.parametrize("attention", ["full", "lsh", "local_global"])
def test_reversible_trains_with_bf16_accumulation_and_clipping(compose_cfg, attention):
    cfg = compose_cfg(f"attention={attention}", "model.reversible=true", "model.chunk_size_feed_forward=8",
                      "trainer.precision=bf16-mixed", "trainer.accumulate_grad_batches=2",
                      "trainer.gradient_clip_val=0.5", "trainer.max_epochs=1", "trainer.limit_train_batches=4",
                      "trainer.limit_val_batches=1", "trainer.accelerator=cpu", "trainer.num_sanity_val_steps=0",
                      "test=false")
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss_epoch"]))
    ckpt = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2  # 4 batches, 2 per optimizer step
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


@pytest.mark.parametrize("data", ["listops", "listops_lra", "lra_text", "lra_retrieval", "lra_image", "lra_pathfinder",
                                  "enwik8", "stdlib_packages", "text_classification"])
def test_data_hyperparameters_load_with_weights_only(compose_cfg, tmp_path, data):
    """Every data module gets plain lists / dicts from its config (no OmegaConf containers), so the hyper-parameters a
    checkpoint stores load with torch.load(weights_only=True), as longdoc's own loaders read them."""
    from omegaconf import DictConfig, ListConfig

    from longdoc.train import build_datamodule

    files = [f"data.train_file={tmp_path / 'train.csv'}", f"data.test_file={tmp_path / 'test.csv'}",
             "data.label_names=[neg,pos]"] if data == "text_classification" else []
    cfg = compose_cfg(f"data={data}", *files, tiny=False)
    hparams = dict(build_datamodule(cfg).hparams)

    def walk(value):
        assert not isinstance(value, (DictConfig, ListConfig)), (data, value)
        for v in (value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()):
            walk(v)

    walk(hparams)
    torch.save({"datamodule_hyper_parameters": hparams}, tmp_path / "h.pt")
    assert torch.load(tmp_path / "h.pt", weights_only=True)["datamodule_hyper_parameters"] == hparams
