"""OmegaConf resolvers used by ``conf/`` (registered when :mod:`longdoc` is imported).

* ``${longdoc.run_id:}``: the run directory's name, the same in every process of one job and across a SLURM
  requeue: ``slurm-<SLURM_JOB_ID>`` (``slurm-<array job>_<task>`` for job arrays) inside a SLURM job,
  ``torchrun-<TORCHELASTIC_RUN_ID>`` under an explicit torchrun ``--rdzv-id``, else the launch time
  ``YYYY-MM-DD_HH-MM-SS``.
* ``${longdoc.short_dirname:${hydra.job.override_dirname}}``: a multirun job's sub-directory part: the overrides
  as Hydra writes them with ``/`` replaced, cut to 48 characters plus an 8-hex-digit SHA-1 of the whole string when
  longer (the full overrides are in the job's ``.hydra/overrides.yaml``), so a dozen overrides never exceed a file
  name's 255 bytes.
* ``${longdoc.val_metric:${data._target_},${task}}``: the validation metric the task is tuned and checkpointed on:
  ``task`` when set, else the data module's task (``val/acc`` for classification and retrieval, ``val/bpb`` for
  language modelling, ``val/bpt`` for masked language modelling).
* ``${longdoc.metric_mode:${optimized_metric}}`` -> ``max`` / ``min`` (Lightning's ModelCheckpoint, EarlyStopping);
  ``${longdoc.metric_direction:...}`` -> ``maximize`` / ``minimize`` (Optuna).
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime

from omegaconf import OmegaConf

#: Longest readable part of a multirun job's sub-directory name (the hash suffix comes on top).
SHORT_DIRNAME_CHARS = 48


def run_id() -> str:
    """Name of this job's run directory: stable across the processes of one job and across a SLURM requeue."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"slurm-{array_job}_{array_task}"
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    rdzv = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if rdzv and rdzv != "none":
        return f"torchrun-{re.sub(r'[^A-Za-z0-9_.-]', '_', rdzv)}"
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def short_dirname(overrides: str | None) -> str:
    """``overrides`` made a safe, short directory name (see the module docstring); ``""`` for none."""
    text = re.sub(r"[/\\\s]", "_", str(overrides or ""))
    if len(text) <= SHORT_DIRNAME_CHARS:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{text[:SHORT_DIRNAME_CHARS].rstrip('_,=')}-{digest}"


def val_metric(data_target: str, task: str | None = None) -> str:
    """The validation metric of ``task`` (the root config key), or when it is None of the task of the data module
    class ``data_target`` (its ``task`` attribute).

    Raises:
        ValueError: the class cannot be imported; ``task`` (or the data's) is unknown, naming ``task`` and the
            choices.
    """
    from hydra.utils import get_class

    from .config import TASK_MONITOR

    if task is not None:
        if task not in TASK_MONITOR:
            raise ValueError(f"task={task!r} is unknown: choose one of {list(TASK_MONITOR)}, or task=null for the "
                             "data module's own task")
        return TASK_MONITOR[task][0]
    task = getattr(get_class(str(data_target)), "task", "classification")
    if task not in TASK_MONITOR:
        raise ValueError(f"data._target_={data_target} has task {task!r}: no validation metric is known for it; "
                         f"set optimized_metric explicitly (one of {sorted({m for m, _ in TASK_MONITOR.values()})})")
    return TASK_MONITOR[task][0]


def metric_mode(metric: str) -> str:
    """``max`` when higher is better for ``metric`` (``*/acc``, ``*/mlm_acc``), ``min`` for ``*/loss``, ``*/bpb``,
    ``*/mlm_loss`` and ``*/bpt``.

    Raises:
        ValueError: a metric of another kind (naming ``optimized_metric``).
    """
    from .config import METRIC_MODES

    kind = str(metric).rsplit("/", 1)[-1]
    if kind not in METRIC_MODES:
        raise ValueError(f"optimized_metric={metric!r}: its direction is unknown; use a validation metric the task "
                         f"logs, ending in one of {sorted(METRIC_MODES)} (e.g. optimized_metric=val/acc)")
    return METRIC_MODES[kind]


def metric_direction(metric: str) -> str:
    """Optuna's direction for ``metric``: ``maximize`` or ``minimize`` (see :func:`metric_mode`)."""
    return "maximize" if metric_mode(metric) == "max" else "minimize"


def register_resolvers() -> None:
    """Register the ``longdoc.*`` resolvers (idempotent)."""
    for name, fn in (("longdoc.run_id", run_id), ("longdoc.short_dirname", short_dirname),
                     ("longdoc.val_metric", val_metric), ("longdoc.metric_mode", metric_mode),
                     ("longdoc.metric_direction", metric_direction)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=name == "longdoc.run_id")
