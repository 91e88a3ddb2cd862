"""Helpers for tests that run the real `train.py` in subprocesses, interrupt it and read its outputs back."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]

#: 2 epochs x 12 batches of a tiny LSH model with dropout on: random rotations and dropout masks both matter.
TINY_RUN = [
    "data.num_train=192", "data.num_val=32", "data.num_test=32", "data.min_length=10", "data.max_length=40",
    "data.batch_size=16", "model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.dropout=0.1",
    "attention=lsh", "trainer.max_epochs=2", "trainer.max_time=null", "trainer.log_every_n_steps=1",
    "trainer.accelerator=cpu", "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null", "callbacks.model_summary=null", "+logger.csv.flush_logs_every_n_steps=1",
    "callbacks.last_every_n_steps.every_n_train_steps=4",
]
TOTAL_STEPS = 24


def train_cmd(run_dir: Path, data_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "train.py", *TINY_RUN, f"hydra.run.dir={run_dir}", f"paths.data_dir={data_dir}", *extra]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a plain shell: no SLURM / submitit / torchrun variables of the test runner, wandb
    offline without an API key."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SUBMITIT_", "TORCHELASTIC_", "WANDB_"))}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def rows(run_dir: Path) -> list[dict]:
    path = run_dir / "csv" / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def train_steps(run_dir: Path) -> list[int]:
    """Logger steps of the ``train/loss_step`` rows of the CSV log, in file order."""
    return [int(r["step"]) for r in rows(run_dir) if r.get("train/loss_step")]


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"train.py ended (code {proc.returncode}) before the condition held:\n{out[-3000:]}")
        try:
            if predicate():
                return
        except (OSError, ValueError, KeyError):  # a file being written
            pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("timed out waiting for train.py")


def final_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


def max_weight_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


def scontrol_stub(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The environment of a SLURM job (an interactive `srun`) whose `scontrol` is a stand-in that appends its
    arguments to the returned log file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text('#!/bin/sh\necho "$@" >> "$SCONTROL_LOG"\n')
    (bin_dir / "scontrol").chmod(0o755)
    calls = tmp_path / "scontrol.log"
    env = clean_env(PATH=f"{bin_dir}:{os.environ['PATH']}", SCONTROL_LOG=str(calls), SLURM_JOB_ID="4242",
                    SLURM_NTASKS="1", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0", SLURM_JOB_NAME="train",
                    SLURM_NODELIST="localhost")
    return env, calls
