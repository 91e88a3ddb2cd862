"""Preemption with the real engines: a signal mid-epoch (SIGTERM; SIGUSR1 in a SLURM job) makes train.py finish the
batch, save last.ckpt and exit non-zero; the rerun (`ckpt_path=auto`, the default) resumes at the next batch and ends
with the same weights as an uninterrupted run (dropout and LSH rotations on), with every step logged once in the CSV
file, TensorBoard and wandb. A kill -9 resumes from the periodic checkpoint just as exactly."""

import glob
import os
import signal
import subprocess
from pathlib import Path

import pytest
from pytorch_lightning.callbacks import Checkpoint

from tests.lightning.runs import (ROOT, TOTAL_STEPS, clean_env, final_weights, max_weight_diff, train_cmd, train_steps,
                                  scontrol_stub, wait_for)
from tests.lightning.wandb_offline import history_and_config

LOGGERS = "logger=[csv,tensorboard,wandb]"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """Final weights of the uninterrupted run."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    res = subprocess.run(train_cmd(run_dir, data_dir, "test=false"), cwd=ROOT, env=clean_env(), capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert train_steps(run_dir) == list(range(TOTAL_STEPS))
    return final_weights(run_dir / "checkpoints" / "last.ckpt")


def _interrupt(cmd, env, run_dir, sig, after_steps=6):
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: len(train_steps(run_dir)) >= after_steps, proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=240)
    return proc.returncode, out


def _tensorboard_steps(run_dir: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events_dir,) = {os.path.dirname(p) for p in glob.glob(str(run_dir / "tensorboard" / "**" / "events.out.tfevents.*"),
                                                            recursive=True)}
    acc = EventAccumulator(events_dir)
    acc.Reload()  # replays the purge that a resumed writer records (SessionLog START at purge_step)
    return [e.step for e in acc.Scalars(tag)]


@pytest.mark.slow
def test_sigterm_mid_epoch_resumes_exactly_with_continuous_dashboards(tmp_path, data_dir, reference):
    run_dir = tmp_path / "run"
    env = clean_env(HOME=str(tmp_path))  # no ~/.netrc: wandb offline
    cmd = train_cmd(run_dir, data_dir, LOGGERS, "test=false")
    code, out = _interrupt(cmd, env, run_dir, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, out[-3000:]  # a scheduler must not see success
    stopped = max(train_steps(run_dir))
    assert stopped < TOTAL_STEPS - 1 and "SIGTERM: saved" in out, out[-3000:]

    resumed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert f"ckpt_path=auto: resuming from {run_dir}/checkpoints/last.ckpt (global step {stopped + 1})" in log
    assert f"resuming epoch 0 after its first {stopped + 1} of 12 batches" in log  # data position restored
    assert train_steps(run_dir) == list(range(TOTAL_STEPS))  # CSV: no gap, no duplicate
    assert _tensorboard_steps(run_dir, "train/loss_step") == list(range(TOTAL_STEPS))
    diff = max_weight_diff(final_weights(run_dir / "checkpoints" / "last.ckpt"), reference)
    assert diff <= 1e-6, f"resumed run differs from the uninterrupted one by {diff}"

    files = sorted(glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb")))
    assert len(files) == 2, files  # one offline directory per process ...
    assert len({Path(f).name for f in files}) == 1, files  # ... of one wandb run id
    assert Path(files[0]).stem == "run-" + (run_dir / "wandb_run_id").read_text().strip()
    logged = [row["trainer/global_step"] for f in files for row in history_and_config(f)[0] if "train/loss_step" in row]
    assert sorted(logged) == list(range(TOTAL_STEPS))  # each step once over both processes


@pytest.mark.slow
def test_sigusr1_in_a_slurm_job_requeues_and_resumes_exactly(tmp_path, data_dir, reference):
    """Lightning's SLURMEnvironment path (`sbatch --signal=USR1@90`, plain srun): the job asks SLURM to requeue it
    (`scontrol requeue $SLURM_JOB_ID`, here a stand-in that records its arguments) and the requeued job resumes."""
    env, calls = scontrol_stub(tmp_path)
    run_dir = tmp_path / "run"
    cmd = train_cmd(run_dir, data_dir, "test=false")
    code, out = _interrupt(cmd, env, run_dir, signal.SIGUSR1)
    assert code == 128 + signal.SIGUSR1, out[-3000:]
    assert calls.read_text().split() == ["requeue", "4242"]
    stopped = max(train_steps(run_dir))
    assert "SIGUSR1: saved" in out and not list(run_dir.glob("hpc_ckpt_*.ckpt")), out[-3000:]

    resumed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert f"resuming from {run_dir}/checkpoints/last.ckpt (global step {stopped + 1})" in log
    assert train_steps(run_dir) == list(range(TOTAL_STEPS))
    assert max_weight_diff(final_weights(run_dir / "checkpoints" / "last.ckpt"), reference) <= 1e-6


@pytest.mark.slow
def test_kill_9_resumes_from_the_periodic_checkpoint_exactly(tmp_path, data_dir, reference):
    """No signal handler runs: the run resumes from last-step.ckpt (every 4 steps); the CSV rows and TensorBoard
    events the killed process wrote after it are dropped / purged, so no step is logged twice."""
    run_dir = tmp_path / "run"
    cmd = train_cmd(run_dir, data_dir, "logger=many", "test=false")
    code, _ = _interrupt(cmd, clean_env(), run_dir, signal.SIGKILL, after_steps=7)  # past the step-4 checkpoint
    assert code == -signal.SIGKILL
    killed_after = max(train_steps(run_dir))
    resumed = subprocess.run(cmd, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=600)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    step = int(log.split("checkpoints/last-step.ckpt (global step ")[1].split(")")[0])
    assert step % 4 == 0 and step <= killed_after + 2, log[-3000:]
    # each step once; the one row that may be missing is the one the killed process logged right after writing
    # the checkpoint (every row before it was flushed first)
    steps = train_steps(run_dir)
    assert steps == sorted(set(steps)) and set(range(TOTAL_STEPS)) - set(steps) <= {step - 1}, (step, steps)
    tb = _tensorboard_steps(run_dir, "train/loss_step")
    assert tb == sorted(set(tb)) and set(range(TOTAL_STEPS)) - set(tb) <= {step - 1}, (step, tb)
    assert max_weight_diff(final_weights(run_dir / "checkpoints" / "last.ckpt"), reference) <= 1e-6


def test_sampler_skips_exactly_the_batches_already_trained():
    import numpy as np

    from longdoc.data import LengthBucketBatchSampler

    lengths = np.random.default_rng(0).integers(5, 50, size=100)
    sampler = LengthBucketBatchSampler(lengths, 8, seed=3)
    sampler.set_epoch(2)
    full = [list(b) for b in sampler]
    sampler.skip_batches(epoch=2, n=5)
    assert [list(b) for b in sampler] == full[5:] and len(sampler) == len(full)
    assert [list(b) for b in sampler] == full  # the skip applies once
    sampler.skip_batches(epoch=1, n=5)  # saved in another epoch (end-of-epoch checkpoint): no skip
    assert [list(b) for b in sampler] == full


class StopAtEpochEnd(Checkpoint):
    """Test instrument (``+callbacks.zstop._target_``): SIGTERM to this process in ``on_train_epoch_end`` of ``epoch``,
    after the checkpoint callbacks' own epoch-end work (a ``Checkpoint`` runs last), as a scheduler's signal can
    land while they write; Lightning's fit loop then raises the stop after marking the epoch completed."""

    def __init__(self, epoch: int = 0):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch and not os.environ.get("NO_STOP"):
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
@pytest.mark.parametrize("limits", [["trainer.max_epochs=-1", f"trainer.max_steps={TOTAL_STEPS}"], []])
def test_a_stop_at_an_epoch_end_resumes_exactly(tmp_path, data_dir, limits):
    """A stop signal during the epoch-end hooks: the checkpoint resumes at the next epoch's first batch, each step
    logged once and the final weights those of an uninterrupted run (with max_epochs=-1 pytorch-lightning 2.6 would
    resume the completed-epoch state one step and one epoch too far)."""
    stop = [*limits, f"+callbacks.zstop._target_={__name__}.StopAtEpochEnd"]
    run_dir, ref_dir = tmp_path / "run", tmp_path / "reference"
    first = subprocess.run(train_cmd(run_dir, data_dir, "test=false", *stop), cwd=ROOT, env=clean_env(),
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 128 + signal.SIGTERM, first.stdout[-3000:] + first.stderr[-3000:]
    assert "saved" in first.stdout + first.stderr and train_steps(run_dir) == list(range(12))
    for d in (run_dir, ref_dir):  # the rerun resumes; the reference runs uninterrupted
        res = subprocess.run(train_cmd(d, data_dir, "test=false", *stop), cwd=ROOT, env=clean_env(NO_STOP="1"),
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert train_steps(run_dir) == list(range(TOTAL_STEPS))
    assert max_weight_diff(final_weights(run_dir / "checkpoints" / "last.ckpt"),
                           final_weights(ref_dir / "checkpoints" / "last.ckpt")) <= 1e-6
