"""hydra-submitit-launcher's local executor, which emulates a SLURM time limit: it sends submitit's signal
(SIGUSR2) 30 s before `timeout_min` and requeues the job when it exits with submitit's requeue code.
The job must save, be requeued into the same run directory, resume at the saved step and end at max_steps with the
weights of an uninterrupted run."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lightning.runs import ROOT, clean_env, final_weights, max_weight_diff, rows, train_steps

# timeout_min=1: the local executor signals after 30 s (its fixed 30 s signal delay) and kills at 60 s. The test
# measures this machine's step rate first and trains for ~38 s worth of steps, so the first attempt (~25 s of
# training after start-up) is signalled mid-run and the second one finishes, on a fast machine or a slow one.
TRAIN_SECONDS = 38.0
CALIBRATION_STEPS = 500
JOB = [
    "data.num_train=192", "data.num_val=32", "data.num_test=32", "data.min_length=10", "data.max_length=40",
    "data.batch_size=16", "model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.dropout=0.1",
    "attention=lsh", "trainer.max_epochs=-1", "trainer.max_time=null",
    "trainer.log_every_n_steps=1", "trainer.accelerator=cpu", "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "callbacks.model_summary=null",
    "+logger.csv.flush_logs_every_n_steps=1", "test=false",
]


def _train(run_dir, data_dir, env, max_steps: int) -> str:
    res = subprocess.run([sys.executable, "train.py", *JOB, f"trainer.max_steps={max_steps}", f"hydra.run.dir={run_dir}",
                          f"paths.data_dir={data_dir}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout + res.stderr


def _sweep(logs, data_dir, env, max_steps: int) -> tuple[Path, str]:
    """Run the job through the local executor; -> (its sweep directory, submitit's logs of all its attempts)."""
    res = subprocess.run(
        [sys.executable, "train.py", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=1", *JOB,
         f"trainer.max_steps={max_steps}", f"paths.log_dir={logs}", f"paths.data_dir={data_dir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (sweep_dir,) = list((logs / "train" / "multiruns").iterdir())  # the requeued job kept its sweep directory
    logs_text = "".join(p.read_text() for p in sorted((sweep_dir / ".submitit").rglob("*_log.*")))
    return sweep_dir, logs_text


@pytest.mark.slow
def test_local_executor_time_limit_requeues_and_resumes_exactly(tmp_path, data_dir):
    env = clean_env()
    calibration = _train(tmp_path / "calibration", data_dir, env, CALIBRATION_STEPS)
    seconds = float(re.search(r"done in ([\d.]+) s", calibration).group(1))
    # no floor at the calibration's own 500 steps: on a loaded machine 500 steps can outlast the local executor's
    # three 25-s attempts (submitit then gives up: 'timed-out too many times')
    max_steps = max(50, int(CALIBRATION_STEPS / seconds * TRAIN_SECONDS))
    for attempt in range(5):  # the machine may run faster than calibrated (a busy calibration): train for longer
        sweep_dir, text = _sweep(tmp_path / f"logs{attempt}", data_dir, env, max_steps)
        if "Caught signal SIGUSR2" in text:
            break
        max_steps *= 2
    print("\n".join(line for line in text.splitlines()
                    if re.search(r"signal|Requeued|saved|resuming|starting fresh|Exiting|completed", line)))
    assert "Caught signal SIGUSR2" in text and "Requeued job" in text, text[-4000:]
    saved = [int(m) for m in re.findall(r"SIGUSR2: saved \S+ at global step (\d+)", text)]
    resumed = [int(m) for m in re.findall(r"resuming from \S+last\.ckpt \(global step (\d+)\)", text)]
    assert saved and resumed[: len(saved)] == saved, (saved, resumed)  # each requeued job resumes where it saved
    assert "Job completed successfully" in text

    job_dirs = [p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(job_dirs) == 1, job_dirs
    run_dir = job_dirs[0]
    assert train_steps(run_dir) == list(range(max_steps))  # one metrics.csv, each train step once
    assert len(list(run_dir.rglob("metrics.csv"))) == 1 and rows(run_dir)
    reference_dir = tmp_path / "reference"
    _train(reference_dir, data_dir, env, max_steps)
    diff = max_weight_diff(final_weights(run_dir / "checkpoints" / "last.ckpt"),
                           final_weights(reference_dir / "checkpoints" / "last.ckpt"))
    assert diff <= 1e-6, diff
