"""OmegaConf resolvers used by ``conf/`` (registered when :mod:`longdoc` is imported).

* ``${longdoc.run_id:<parent>}`` (``conf/hydra/default.yaml``: ``<parent>`` = ``${paths.log_dir}/${task_name}/runs``):
  the run directory's name. Inside a SLURM job ``slurm-<SLURM_JOB_ID>`` (``slurm-<array job>_<task>`` for job
  arrays), under an explicit torchrun ``--rdzv-id`` ``torchrun-<TORCHELASTIC_RUN_ID>``: the same in every process of
  the job and across a requeue, so ``ckpt_path=auto`` finds the job's own checkpoints again. Elsewhere the launch time
  ``YYYY-MM-DD_HH-MM-SS``, and the directory ``<parent>/<name>`` is created here, exclusively (``os.mkdir``): when it
  exists already (another run started in the same second) the name gets the first free suffix ``_1``, ``_2``, ...,
  so two runs never share a run directory. Resolved once per process (cached per parent), so Lightning's DDP
  processes, which receive ``hydra.run.dir=<rank 0's directory>``, and every later use agree on one directory.
  Without ``<parent>`` (``${longdoc.run_id:}``): the name alone, nothing created.
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
import itertools
import os
import re
from datetime import datetime

from omegaconf import OmegaConf

#: Longest readable part of a multirun job's sub-directory name (the hash suffix comes on top).
SHORT_DIRNAME_CHARS = 48

# parent directory -> the run directory name run_id created there in this process
_RUN_IDS: dict[str, str] = {}


def cluster_run_id() -> str | None:
    """The run id a cluster launcher gives every process of one job, stable across a requeue:
    ``slurm-<array job>_<task>``, ``slurm-<job id>`` or ``torchrun-<rendezvous id>`` (its characters outside
    ``[A-Za-z0-9_.-]`` replaced by ``_``); None outside SLURM and without an explicit torchrun ``--rdzv-id``."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"slurm-{array_job}_{array_task}"
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    rdzv = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if rdzv and rdzv != "none":
        return f"torchrun-{re.sub(r'[^A-Za-z0-9_.-]', '_', rdzv)}"
    return None


def run_id(parent: str | None = None) -> str:
    """Name of this job's run directory under ``parent`` (see the module docstring): :func:`cluster_run_id` when
    there is one (nothing is created: a requeued job must find its directory again), else the launch time
    ``YYYY-MM-DD_HH-MM-SS``. With ``parent`` (outside a cluster job) the directory ``<parent>/<name>`` is created
    here with ``os.mkdir`` (``parent`` with ``os.makedirs``), the name taking the first free suffix ``_1``, ``_2``,
    ... when another process created it first; the same name is returned for the same ``parent`` for the rest of
    the process, and :func:`created_run_dirs` lists the directory. When ``parent`` cannot be created or written
    the time alone is returned (nothing created; Hydra's own ``mkdir`` of the run directory then fails naming it).
    """
    stable = cluster_run_id()
    if stable is not None:
        return stable
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    if not parent:
        return stamp
    parent = os.path.abspath(parent)
    if parent in _RUN_IDS:
        return _RUN_IDS[parent]
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError:  # not creatable (a file, no permission): Hydra's own mkdir of the run directory reports it
        return stamp
    for n in itertools.count():
        name = stamp if n == 0 else f"{stamp}_{n}"
        try:
            os.mkdir(os.path.join(parent, name))
        except FileExistsError:
            continue
        except OSError:  # not writable: the same
            return stamp
        _RUN_IDS[parent] = name
        return name
    raise AssertionError("unreachable")  # pragma: no cover


def created_run_dirs() -> list[str]:
    """Absolute paths of the run directories :func:`run_id` created in this process (they did not exist before)."""
    return [os.path.join(parent, name) for parent, name in _RUN_IDS.items()]


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
    """``max`` when higher is better for ``metric`` (``*/acc``, ``*/mlm_acc``, ``*/f1_micro``, ``*/f1_macro``,
    ``*/f1``, ``*/precision``, ``*/recall``, ``*/token_acc``, ``*/exact_match``), ``min`` for ``*/loss``,
    ``*/bpb``, ``*/mlm_loss`` and ``*/bpt`` (``longdoc.config.METRIC_MODES``).

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
