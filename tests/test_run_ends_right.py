"""Every run a user starts ends right: short runs validate once and test their best checkpoint, staged runs take the
command line's keys, resumes with other settings are refused before any file changes, finished runs are left as
they are, a fresh start moves an earlier attempt aside, and bad values fail at composition naming their key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from longdoc.config import ConfigError, check_config, check_machine
from longdoc.train import optimized_value, train, validate_config
from tests.conftest import CONF_DIR, TINY_DATA, TINY_MODEL
from tests.lightning.runs import ROOT, clean_env, rows

QUIET = ["callbacks.progress_bar=null", "trainer.enable_progress_bar=false", "callbacks.model_summary=null",
         "trainer.accelerator=cpu"]
# 160 training samples in batches of 16: an epoch is 10 batches, validation once per epoch
SHORT = ["trainer.max_steps=4", "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=1"]


def cli(tmp_path: Path, data_dir: Path, *args: str, run_dir: Path | None = None, timeout: int = 600):
    """``python train.py <tiny data and model> *args`` in a subprocess."""
    cmd = [sys.executable, "train.py", *TINY_DATA, *TINY_MODEL, *QUIET, f"paths.data_dir={data_dir}",
           f"paths.log_dir={tmp_path / 'logs'}", *args]
    if run_dir is not None:
        cmd.append(f"hydra.run.dir={run_dir}")
    return subprocess.run(cmd, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=timeout)


def snapshot(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Content and mtime (ns) of every file a run writes itself (Hydra's .hydra/ and train.log aside)."""
    return {str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run_dir.rglob("*"))
            if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"}


def ckpt_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


# ------------------------------------------------------------------------------------------------------------------
# A run that stops before its first validation
# ------------------------------------------------------------------------------------------------------------------
def test_run_shorter_than_an_epoch_validates_once_and_tests_its_best_checkpoint(compose_cfg):
    cfg = compose_cfg(*SHORT, *QUIET)
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    # the validation the run would never have reached ran once, at the last step: best.ckpt is that step's weights
    assert ckpt_step(out / "checkpoints" / "best.ckpt") == 4
    # last.ckpt knows that best (a resume compares new scores with it)
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["callbacks"]
    best = [v for k, v in state.items() if k.startswith("ModelCheckpoint")][0]
    assert best["best_model_path"] == str(out / "checkpoints" / "best.ckpt")
    val_rows = [r for r in rows(out) if r.get("val/acc")]
    assert [int(r["step"]) for r in val_rows] == [3]  # Lightning logs the validation at step index global_step - 1
    assert metrics["val/acc_best"] == pytest.approx(float(val_rows[0]["val/acc"]))
    assert optimized_value(cfg, metrics) == metrics["val/acc_best"]
    saved = json.loads((out / "metrics.json").read_text())
    assert "test/acc" in saved and saved["val/acc_best"] == metrics["val/acc_best"]


@pytest.mark.slow
def test_short_runs_exit_0_on_the_command_line_alone_and_under_ddp(tmp_path, data_dir):
    for extra in ([], ["trainer=ddp_cpu"]):
        run_dir = tmp_path / ("ddp" if extra else "one")
        res = cli(tmp_path, data_dir, *SHORT, *extra, run_dir=run_dir)
        assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
        saved = json.loads((run_dir / "metrics.json").read_text())
        assert "test/acc" in saved and "val/acc_best" in saved
        assert ckpt_step(run_dir / "checkpoints" / "best.ckpt") == 4


def test_validation_off_tests_the_last_weights_and_says_so(compose_cfg, caplog):
    cfg = compose_cfg("trainer.limit_val_batches=0", *SHORT, *QUIET)
    with caplog.at_level("WARNING", logger="longdoc"):
        metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert "test/acc" in metrics and not (out / "checkpoints" / "best.ckpt").exists()
    assert "trainer.limit_val_batches=0: this run never validates" in caplog.text
    assert optimized_value(cfg, metrics) is None  # nothing to report, and no error


def test_validation_off_under_a_sweeper_fails_at_composition_naming_both_keys(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=optuna", "trainer.limit_val_batches=0",
                                          f"paths.output_dir={tmp_path}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError, match=r"trainer.limit_val_batches=0 .*sweeper .*hparams_search"):
        check_config(cfg)


def test_an_epoch_interval_longer_than_the_run_fails_at_composition(compose_cfg):
    with pytest.raises(ConfigError, match=r"trainer.check_val_every_n_epoch=5 > trainer.max_epochs=2"):
        check_config(compose_cfg("trainer.check_val_every_n_epoch=5"))


# ------------------------------------------------------------------------------------------------------------------
# Staged experiments take the command line's keys
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_command_line_max_steps_applies_to_every_stage(tmp_path, data_dir):
    run_dir = tmp_path / "spt"
    res = cli(tmp_path, data_dir, "experiment=spt/listops", "trainer.max_steps=3", "trainer.limit_val_batches=1",
              "trainer.num_sanity_val_steps=0", run_dir=run_dir)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    # the preset's stages say 500 steps and validate every 250: each stage ran 3 and validated once at its end
    for stage in ("pretrain", "finetune"):
        assert ckpt_step(run_dir / stage / "checkpoints" / "last.ckpt") == 3
        assert ckpt_step(run_dir / stage / "checkpoints" / "best.ckpt") == 3
        assert f"stage {stage}: trainer.max_steps=3 from the command line applies to this stage too (replaces " \
               f"stages.{stage}.trainer.max_steps=500)" in out
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert "finetune/test/acc" in saved and "pretrain/val/bpt_best" in saved
    assert saved["optimized_value"] == saved["finetune/val/acc_best"]


# ------------------------------------------------------------------------------------------------------------------
# Resuming and rerunning a run directory
# ------------------------------------------------------------------------------------------------------------------
def test_resume_with_other_settings_is_refused_before_any_file_changes(compose_cfg):
    cfg = compose_cfg(*SHORT, *QUIET)
    train(cfg)
    out = Path(cfg.paths.output_dir)
    before = snapshot(out)
    with pytest.raises(ConfigError) as err:
        train(compose_cfg(*SHORT, *QUIET, "model.d_model=64", "trainer.max_steps=8"))
    assert "model.d_model: 32 (the run) -> 64 (now)" in str(err.value)
    assert "trainer.max_steps" not in str(err.value)  # allowed to change: not listed
    assert f"{out}/config.yaml" in str(err.value) and "new run directory" in str(err.value)
    with pytest.raises(ConfigError, match=r"attention.name: 'local_global' \(the run\) -> 'full' \(now\)"):
        train(compose_cfg(*SHORT, *QUIET, "attention=full"))
    assert snapshot(out) == before


def test_finished_run_rerun_changes_nothing_and_a_longer_one_continues_keeping_every_metric(compose_cfg, caplog):
    cfg = compose_cfg(*SHORT, *QUIET)
    first = train(cfg)
    out = Path(cfg.paths.output_dir)
    before = snapshot(out)
    with caplog.at_level("INFO", logger="longdoc"):
        again = train(compose_cfg(*SHORT, *QUIET))
    assert again == first and snapshot(out) == before
    assert "finished before" in caplog.text
    # twice the steps: the run continues from step 4 and metrics.json keeps every key it had
    caplog.clear()
    with caplog.at_level("INFO", logger="longdoc"):
        longer = train(compose_cfg(*SHORT, *QUIET, "trainer.max_steps=8"))
    assert "no best checkpoint" not in caplog.text  # the resumed run still tests the best checkpoint of step 4
    assert ckpt_step(out / "checkpoints" / "last.ckpt") == 8
    saved = json.loads((out / "metrics.json").read_text())
    assert set(first) <= set(saved) and saved == pytest.approx(longer)
    logged = [(int(r["step"]), int(r["epoch"])) for r in rows(out) if r.get("train/loss_step")]
    # each step logged once, in the epoch it belongs to (10 batches an epoch): the rerun went on inside epoch 0
    assert logged == [(step, 0) for step in range(8)]


def test_unreadable_checkpoints_start_fresh_with_the_earlier_attempt_moved_aside(compose_cfg, caplog):
    cfg = compose_cfg(*SHORT, *QUIET)
    train(cfg)
    out = Path(cfg.paths.output_dir)
    last = out / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a write cut off halfway
    old_rows = rows(out)
    with caplog.at_level("INFO", logger="longdoc"):
        train(compose_cfg(*SHORT, *QUIET))
    assert f"skipping unreadable checkpoint {last}: it is truncated" in caplog.text
    moved = out / "earlier-attempt-1"
    assert {p.name for p in moved.iterdir()} >= {"checkpoints", "csv", "metrics.json", "config.yaml"}
    assert rows(moved) == old_rows  # the earlier attempt's log, untouched
    steps = [int(r["step"]) for r in rows(out) if r.get("train/loss_step")]
    assert steps == [0, 1, 2, 3]  # the new attempt's log holds each step once
    assert ckpt_step(out / "checkpoints" / "last.ckpt") == 4


def test_ckpt_path_may_name_a_run_directory(compose_cfg, tmp_path, caplog):
    cfg = compose_cfg(*SHORT, *QUIET)
    train(cfg)
    out = Path(cfg.paths.output_dir)
    other = tmp_path / "other"
    with caplog.at_level("INFO", logger="longdoc"):
        train(compose_cfg(*SHORT, *QUIET, "trainer.max_steps=6", f"ckpt_path={out}", f"paths.output_dir={other}"))
    assert f"resuming from {out}/checkpoints/last.ckpt (global step 4)" in caplog.text
    assert ckpt_step(other / "checkpoints" / "last.ckpt") == 6
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="is a directory without a readable last"):
        train(compose_cfg(*SHORT, *QUIET, f"ckpt_path={empty}", f"paths.output_dir={tmp_path / 'x'}"))


# ------------------------------------------------------------------------------------------------------------------
# Bad values fail at composition naming the key
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides,message", [
    (["data.batch_size=big"], r"data.batch_size='big' \(str\) is not a valid value: .* takes int, e.g. "
                              r"data.batch_size=32"),
    (["data=stdlib_packages", "data.exclude_dirs=5"], r"data.exclude_dirs=5 \(int\) is not a valid value: .* takes "
                                                       r"a list of str"),
    (["+data.batchsize=8"], r"data.batchsize is not a setting of data: did you mean data.batch_size\?"),
    (["seed=abc"], r"^seed: Value 'abc' of type 'str' could not be converted to Integer"),
    (["+model.dpeth=3"], r"model.dpeth is not a setting of model: did you mean model.depth\?"),
    (["+trainer.max_step=3"], r"trainer.max_step is not a setting of trainer: did you mean trainer.max_steps"),
    (["+optimizer.momentum=0.9"], r"optimizer.momentum is not a setting of optimizer"),
    (["trainer.devices=3"], r"trainer.devices=3 .* starts 3 processes.* `trainer=ddp_cpu trainer.devices=3` on CPU "
                            r"or `trainer=ddp trainer.devices=3` on GPUs"),
])
def test_bad_values_fail_at_composition_naming_the_key(compose_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_cfg(*overrides, tiny="data=stdlib_packages" not in overrides))


def test_seed_is_checked_before_it_is_used(compose_cfg):
    with pytest.raises(ConfigError, match=r"^seed: "):
        train(compose_cfg("seed=abc"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_gpu_trainer_without_a_gpu_names_the_cpu_trainer(compose_cfg):
    with pytest.raises(ConfigError, match=r"trainer.accelerator=gpu but this machine has no CUDA GPU .* use trainer=cpu"):
        check_machine(compose_cfg("trainer=gpu"))


def test_a_validation_interval_longer_than_an_epoch_names_the_key_and_both_fixes(compose_cfg):
    cfg = compose_cfg("trainer.val_check_interval=1000", *QUIET)
    with pytest.raises(ConfigError, match=r"trainer.val_check_interval=1000 is more than the 10 training batches of an "
                                          r"epoch: .* trainer.check_val_every_n_epoch=null"):
        train(cfg)
    assert not os.path.exists(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")


def test_resume_comparison_by_hand():
    from longdoc.config import check_resume_config, extends_training

    old = {"model": {"d_model": 32}, "trainer": {"max_steps": 4, "max_time": "00:00:10:00"}, "seed": 1}
    new = {"model": {"d_model": 32, "threshold": 0.5}, "trainer": {"max_steps": 8, "max_time": "00:00:10:00"},
           "seed": 1}
    diffs = check_resume_config(old, new, "x", "run")  # a setting a newer version added, and a longer run: allowed
    assert diffs == [("model.threshold", "<absent>", 0.5), ("trainer.max_steps", 4, 8)]
    assert extends_training(diffs)
    assert not extends_training([("trainer.max_steps", 8, 4)])
    assert extends_training([("trainer.max_time", "00:00:10:00", "00:01:00:00")])
    assert extends_training([("trainer.max_epochs", 2, -1)])  # no limit
    with pytest.raises(ConfigError, match=r"seed: 1 \(the run\) -> 2 \(now\)"):
        check_resume_config(old, {**new, "seed": 2}, "x", "run")
