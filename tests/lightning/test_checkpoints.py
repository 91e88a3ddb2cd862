"""Checkpoint files under failure: a kill -9 while one is written leaves the previous one intact; a truncated one is
refused with its path named, and `ckpt_path=auto` falls back to the next readable one."""

import logging
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from longdoc.config import ConfigError
from longdoc.train import resolve_ckpt_path
from tests.lightning.runs import ROOT, clean_env, train_cmd

SLOW_SAVE = textwrap.dedent("""
    import sys, time
    import torch
    from longdoc.lightning import AtomicCheckpointIO

    class SlowToPickle:
        def __reduce__(self):  # torch.save is under way when this runs
            sys.stdout.write("pickling\\n"); sys.stdout.flush()
            time.sleep(60)
            return (dict, ())

    AtomicCheckpointIO().save_checkpoint(
        {"global_step": 2, "state_dict": {"w": torch.ones(256, 1024)}, "slow": SlowToPickle()}, sys.argv[1])
""")


def test_kill_9_while_saving_leaves_the_previous_checkpoint_intact(tmp_path):
    from longdoc.lightning import AtomicCheckpointIO

    target = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1, "state_dict": {"w": torch.zeros(3)}}, target)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(target)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "pickling"
    partial = list(target.parent.glob(".last.ckpt.tmp-*"))
    assert len(partial) == 1  # the new checkpoint is being written to a temporary file ...
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    ckpt = torch.load(target, weights_only=False)  # ... beside the old one, which is untouched
    assert ckpt["global_step"] == 1 and torch.equal(ckpt["state_dict"]["w"], torch.zeros(3))
    path, meta = resolve_ckpt_path("auto", tmp_path)  # the leftover temporary file is not a candidate
    assert path == str(target) and meta["global_step"] == 1


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_dir):
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    res = subprocess.run(train_cmd(run_dir, data_dir, "trainer.max_epochs=1", "test=false"), cwd=ROOT, env=clean_env(),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return run_dir


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.slow
def test_truncated_checkpoint_is_refused_by_name_and_auto_falls_back(tmp_path, trained_run, data_dir, caplog):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    last, step_ckpt = run_dir / "checkpoints" / "last.ckpt", run_dir / "checkpoints" / "last-step.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 12
    # a last-step.ckpt older than last.ckpt (fewer steps): what auto falls back to
    ckpt = torch.load(last, weights_only=False)
    ckpt["global_step"] = 8
    torch.save(ckpt, step_ckpt)
    time.sleep(0.01)
    _truncate(last)

    with pytest.raises(ConfigError, match=rf"checkpoint {last} cannot be read: it is truncated"):
        resolve_ckpt_path(str(last), run_dir)
    with caplog.at_level(logging.WARNING, logger="longdoc"):
        path, meta = resolve_ckpt_path("auto", run_dir)
    assert path == str(step_ckpt) and meta["global_step"] == 8
    assert f"skipping unreadable checkpoint {last}" in caplog.text

    # the real command line: refused before any training, with the file named
    res = subprocess.run(train_cmd(tmp_path / "other", data_dir, f"ckpt_path={last}"), cwd=ROOT, env=clean_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and f"checkpoint {last} cannot be read" in res.stdout + res.stderr
    assert not (tmp_path / "other" / "checkpoints").exists()
