"""Ctrl-C with the real engine: SIGINT sent to the whole process group of a real `train.py` run (what a terminal
does: the DataLoader workers and the DDP ranks get it too) finishes the running batch, saves last.ckpt at that step,
requeues nothing and exits 130; rerunning the same command resumes there and ends with the weights of an
uninterrupted run. Under DDP every rank stops after the same batch. A second Ctrl-C stops at once without saving."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from tests.lightning.runs import (ROOT, TOTAL_STEPS, clean_env, final_weights, max_weight_diff, train_cmd, train_steps,
                                  scontrol_stub, wait_for)

#: Two DataLoader worker processes: a terminal's Ctrl-C reaches them too, and they must not end the run.
WORKERS = "data.num_workers=2"


class StallAtStop(pl.Callback):
    """Test instrument, loaded into the real run through ``+callbacks.stall._target_``: at the end of the batch that
    completes optimizer step ``at_step`` it writes ``ready`` and holds the batch open until the graceful stop has been
    requested (``trainer.received_sigterm``), then writes ``marker`` and keeps the batch busy for up to ``seconds``,
    so the first Ctrl-C surely lands inside a training batch and a second one surely arrives while the first is still
    finishing it."""

    def __init__(self, marker: str, ready: str, at_step: int = 2, seconds: float = 120.0):
        self.marker, self.ready, self.at_step, self.seconds = Path(marker), Path(ready), at_step, seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step != self.at_step or self.ready.exists():
            return
        self.ready.write_text(str(trainer.global_step))
        deadline = time.monotonic() + self.seconds
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.05)
        self.marker.write_text(str(trainer.global_step))
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)


def _start(cmd, env) -> subprocess.Popen:
    # a session of its own: os.killpg reaches train.py and every process it starts, as a terminal's Ctrl-C does
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 180.0) -> str:
    """Wait for train.py and every process of its group; a hang is killed and reported."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"train.py hung after SIGINT:\n{out[-4000:]}") from None
    deadline = time.time() + 60
    while time.time() < deadline:  # the other DDP ranks / workers end too
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return out
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"processes of the run were left behind after train.py exited:\n{out[-4000:]}")


def _ctrl_c_between_periodic_checkpoints(proc: subprocess.Popen, run_dir: Path, min_steps: int, every: int = 4) -> int:
    """Pause the run (SIGSTOP to its group) at a count L >= ``min_steps`` of logged steps with L % ``every`` in
    (1, 2), press Ctrl-C (SIGINT) and let it go on (SIGCONT); returns L. A step's CSV row is written right before
    Lightning's end-of-batch stop check, so the stop lands at global step L or L + 1 (the batch in progress
    finishes): strictly after the periodic last-step.ckpt (every ``every`` steps) and before the next one."""
    while True:
        wait_for(lambda: len(train_steps(run_dir)) >= min_steps, proc)
        os.killpg(proc.pid, signal.SIGSTOP)
        logged = len(train_steps(run_dir))
        if logged % every in (1, 2):
            break
        os.killpg(proc.pid, signal.SIGCONT)
        min_steps = logged + 1
    os.killpg(proc.pid, signal.SIGINT)
    os.killpg(proc.pid, signal.SIGCONT)
    return logged


def _step(ckpt: Path) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]


@pytest.mark.slow
def test_ctrl_c_saves_the_running_step_exits_130_and_the_rerun_resumes_exactly(tmp_path, data_dir):
    reference_dir = tmp_path / "reference"
    res = subprocess.run(train_cmd(reference_dir, data_dir, WORKERS, "test=false"), cwd=ROOT, env=clean_env(),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert train_steps(reference_dir) == list(range(TOTAL_STEPS))
    reference = final_weights(reference_dir / "checkpoints" / "last.ckpt")

    env, scontrol_calls = scontrol_stub(tmp_path)  # a SLURM job: Ctrl-C must not requeue it
    run_dir = tmp_path / "run"
    cmd = train_cmd(run_dir, data_dir, WORKERS, "test=false")
    proc = _start(cmd, env)
    pressed_at = _ctrl_c_between_periodic_checkpoints(proc, run_dir, min_steps=5)  # epoch 0 has 12 batches
    out = _finish(proc)
    assert proc.returncode == 130, out[-4000:]  # 128 + SIGINT, as a shell reports an interrupted command
    assert "caught SIGINT (Ctrl-C)" in out and "press Ctrl-C again to stop at once without saving" in out, out[-4000:]
    assert "Detected KeyboardInterrupt" not in out, out[-4000:]  # Lightning's shutdown without a checkpoint
    assert not scontrol_calls.exists(), scontrol_calls.read_text()  # not requeued

    logged = train_steps(run_dir)
    assert logged == list(range(len(logged))) and len(logged) < TOTAL_STEPS, logged
    saved = _step(run_dir / "checkpoints" / "last.ckpt")
    periodic = _step(run_dir / "checkpoints" / "last-step.ckpt")
    assert saved in (pressed_at, pressed_at + 1), (saved, pressed_at)  # the batch running at Ctrl-C, no further
    assert saved == len(logged), (saved, logged)  # every trained step is in last.ckpt: nothing lost
    assert periodic == 4 * (pressed_at // 4) and saved > periodic, (saved, periodic)  # more than the periodic one

    resumed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-4000:]
    assert f"ckpt_path=auto: resuming from {run_dir}/checkpoints/last.ckpt (global step {saved})" in log, log[-4000:]
    assert train_steps(run_dir) == list(range(TOTAL_STEPS))  # no step lost, none repeated
    diff = max_weight_diff(final_weights(run_dir / "checkpoints" / "last.ckpt"), reference)
    assert diff <= 1e-6, f"resumed run differs from the uninterrupted one by {diff}"


@pytest.mark.slow
def test_ctrl_c_under_ddp_stops_every_rank_after_the_same_batch(tmp_path, data_dir):
    """Two CPU ranks (gloo): 192 samples / 16 per batch / 2 ranks = 6 batches per epoch, 12 steps in 2 epochs. Both
    ranks get the SIGINT; they stop after one batch, rank 0 saves, every process exits; the rerun finishes."""
    run_dir = tmp_path / "run"
    cmd = train_cmd(run_dir, data_dir, "trainer=ddp_cpu", "test=false")
    proc = _start(cmd, clean_env())
    pressed_at = _ctrl_c_between_periodic_checkpoints(proc, run_dir, min_steps=5)
    out = _finish(proc)
    assert proc.returncode == 130, out[-4000:]
    assert out.count("caught SIGINT (Ctrl-C)") == 2, out[-4000:]  # each rank got the terminal's signal
    assert "SIGINT (Ctrl-C): all 2 ranks stop after this batch" in out, out[-4000:]

    logged = train_steps(run_dir)
    assert logged == list(range(len(logged))) and len(logged) < 12, logged
    saved = _step(run_dir / "checkpoints" / "last.ckpt")
    assert saved in (pressed_at, pressed_at + 1) and saved == len(logged), (saved, pressed_at, logged)
    assert saved > _step(run_dir / "checkpoints" / "last-step.ckpt"), saved

    resumed = subprocess.run(cmd, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=600)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-4000:]
    assert f"resuming from {run_dir}/checkpoints/last.ckpt (global step {saved})" in log, log[-4000:]
    assert train_steps(run_dir) == list(range(12)) and _step(run_dir / "checkpoints" / "last.ckpt") == 12


def test_second_ctrl_c_stops_at_once_without_saving(tmp_path, data_dir):
    """StallAtStop holds a batch open until the first Ctrl-C, then for 120 s; the second one ends the run within
    seconds through Lightning's KeyboardInterrupt path (exit 1), and no last.ckpt is written."""
    run_dir, marker, ready = tmp_path / "run", tmp_path / "stop-requested", tmp_path / "in-batch"
    cmd = train_cmd(run_dir, data_dir, "test=false", f"+callbacks.stall._target_={__name__}.StallAtStop",
                    f"+callbacks.stall.marker={marker}", f"+callbacks.stall.ready={ready}")
    proc = _start(cmd, clean_env())
    wait_for(ready.exists, proc)  # inside a training batch, held open until the first Ctrl-C is handled
    os.killpg(proc.pid, signal.SIGINT)
    wait_for(marker.exists, proc, timeout=60)  # the first Ctrl-C was handled; its batch is still running
    os.killpg(proc.pid, signal.SIGINT)
    out = _finish(proc, timeout=60)  # well before the 120 s stall ends
    assert proc.returncode == 1, out[-4000:]  # Lightning's exit after a KeyboardInterrupt
    assert "Detected KeyboardInterrupt" in out, out[-4000:]
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()  # nothing saved at the stop


def test_a_run_started_with_ctrl_c_ignored_keeps_ignoring_it(tmp_path, data_dir):
    """A background job of a script or a `nohup`-like launcher starts with SIGINT ignored: the run does not take
    Ctrl-C over; it trains to the end (1 epoch: 12 steps) and exits 0."""
    run_dir = tmp_path / "run"
    cmd = train_cmd(run_dir, data_dir, "test=false", "trainer.max_epochs=1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    wait_for(lambda: len(train_steps(run_dir)) >= 2, proc)
    os.killpg(proc.pid, signal.SIGINT)
    out = _finish(proc)
    assert proc.returncode == 0, out[-4000:]
    assert "caught SIGINT" not in out and train_steps(run_dir) == list(range(12)), out[-4000:]
