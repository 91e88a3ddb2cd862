"""Loggers that survive resuming: a CSV logger (Lightning's CSVLogger deletes an existing ``metrics.csv``) and an
MLflow logger that continues the same MLflow run."""

from __future__ import annotations

import contextlib
import csv
import importlib
import logging
import os
import re
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers import CSVLogger, MLFlowLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.rank_zero import rank_zero_warn

log = logging.getLogger(__name__)

#: Characters MLFlowLogger strips from metric names (MLflow allows letters, digits, ``_ / . -`` and space).
_MLFLOW_BAD_METRIC_CHARS = r"[^a-zA-Z0-9_/. -]+"
#: Characters replaced by ``_`` in param keys (the same set).
_MLFLOW_BAD_PARAM_CHARS = r"[^a-zA-Z0-9_/. -]"


class _KeepingWriter(ExperimentWriter):
    """Experiment writer that appends to an existing ``metrics.csv`` instead of deleting it."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as fh:
                header = next(csv.reader(fh), [])
            self.metrics_keys = sorted(header)

    def truncate_after(self, step: int) -> int:
        """Drop the rows logged at ``step`` or later (by an interrupted run, which the resumed run logs again);
        return how many."""
        if not os.path.isfile(self.metrics_file_path):
            return 0
        with open(self.metrics_file_path, newline="") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            rows = list(reader)
        keep = [r for r in rows if r.get("step", "") == "" or int(float(r["step"])) < step]
        with open(self.metrics_file_path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(keep)
        return len(rows) - len(keep)


class ResumableCSVLogger(CSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` that keeps the rows of an earlier, interrupted run in the same
    directory when training resumes from a checkpoint, dropping only the rows past the checkpoint's step
    (``truncate_after``: the rows of the steps the resumed run logs again), so the metrics file has no gap and no
    duplicate step. Same arguments as CSVLogger.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> _KeepingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment

    def truncate_after(self, step: int) -> int:
        """Drop the rows at logger step ``step`` or later (:meth:`_KeepingWriter.truncate_after`) on global rank 0;
        0 elsewhere (only rank 0 writes the file)."""
        if rank_zero_only.rank != 0:
            return 0
        return self.experiment.truncate_after(step)


#: What ``logger=mlflow`` needs, and the command that installs it.
MLFLOW_INSTALL_HINT = "pip install -e '.[mlflow]'  (or: pip install mlflow)"


def _require_mlflow(tracking_uri: str | None) -> None:
    """Raise a clear :class:`ModuleNotFoundError` when mlflow (or, for a ``sqlite:`` store, SQLAlchemy / alembic)
    cannot be imported."""
    needed = ["mlflow"] + (["sqlalchemy", "alembic"] if str(tracking_uri or "").startswith("sqlite:") else [])
    for name in needed:
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ModuleNotFoundError(
                f"logger=mlflow (longdoc.lightning.ResumableMLFlowLogger, tracking_uri={tracking_uri!r}) needs the "
                f"{name!r} package, which cannot be imported ({err}). Install it with `{MLFLOW_INSTALL_HINT}`, or "
                "choose another logger (logger=csv, logger=tensorboard, logger=wandb)", name=name) from err


def _sqlite_path(uri: str | None) -> Path | None:
    """The database file of a ``sqlite:///<path>`` URI; None for other URIs and in-memory databases."""
    prefix = "sqlite:///"
    if not uri or not uri.startswith(prefix) or uri[len(prefix):].split("?")[0] in ("", ":memory:"):
        return None
    return Path(uri[len(prefix):].split("?")[0]).expanduser()


def _local_sqlite_uri(uri: str) -> str:
    """``sqlite:///<relative path>`` -> ``sqlite:///<absolute path>``, with the database's directory created (SQLite
    creates the file, not its directory). Other URIs are returned unchanged."""
    path = _sqlite_path(uri)
    if path is None:
        return uri
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}" + (uri[uri.index("?"):] if "?" in uri else "")


def _flatten(params: Mapping[str, Any], parent: str = "") -> dict[str, Any]:
    """Nested mappings -> ``{"a/b/c": value}`` (Lightning's key joining; lists stay whole values)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{parent}/{key}" if parent else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat


class ResumableMLFlowLogger(MLFlowLogger):
    """``pytorch_lightning.loggers.MLFlowLogger`` that continues the same MLflow run when a preempted job resumes,
    with every (metric, step) recorded once.

    * The run id is kept in ``run_id_file`` (``<run dir>/mlflow_run_id``): written on global rank 0 when the run is
      created (first start), read back by a later start in the same run directory, which then logs into that run
      (its status set back to RUNNING).
    * Each (metric, step) is recorded once, the first value kept: a resumed job logs the steps from its
      checkpoint's step on again (the interrupted process may have logged some of them already; the resumed run
      replays them exactly) and MLflow cannot delete logged values, so a (metric, step) the run has is not logged
      again (:meth:`truncate_after` gives the step the replay starts from); nor is a metric logged twice at one
      step by one process (Lightning adds ``epoch`` to each ``log_metrics`` call, several at an epoch's end).
    * :meth:`log_hyperparams` takes the full run config: nested keys joined with ``/``, values longer than MLflow's
      limit (``mlflow.utils.validation.MAX_PARAM_VAL_LENGTH``, 6000 characters in mlflow 2.x / 3.x) truncated with a
      warning, characters MLflow refuses in keys replaced by ``_``; a param the run already has is not logged again
      (MLflow refuses to change a param: a resumed job with a changed value keeps the first one, with a warning).
    * A ``sqlite:///<path>`` tracking store gets an absolute path and its directory created; a plain-path
      ``artifact_location`` an absolute path (it is stored with the experiment, at its creation).

    Args:
        run_id_file: file that holds the MLflow run id across restarts of the same run; None: a new run each start
            (Lightning's behaviour) unless ``run_id`` is given.
        tracking_uri: MLflow tracking store, e.g. ``sqlite:///outputs/mlflow.db`` (one database for many runs; MLflow
            deprecates ``file:`` stores) or ``http://host:5000``.
        artifact_location: where the experiment's artifacts go, when this logger creates the experiment.
        **kwargs: the other arguments of ``MLFlowLogger`` (``experiment_name``, ``run_name``, ``tags``,
            ``log_model``, ``prefix``, ``run_id``, ``synchronous``).

    Raises:
        ModuleNotFoundError: mlflow (or, for a ``sqlite:`` store, SQLAlchemy / alembic) is not installed; the message
            gives the ``pip install`` command.
        ValueError: (on first use) ``run_id_file`` names a run the tracking store does not have or has deleted.
    """

    def __init__(self, run_id_file: str | os.PathLike | None = None, tracking_uri: str | None = None,
                 artifact_location: str | None = None, **kwargs: Any) -> None:
        tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        _require_mlflow(tracking_uri)
        if tracking_uri:
            tracking_uri = _local_sqlite_uri(str(tracking_uri))
        if artifact_location and "://" not in str(artifact_location) and not str(artifact_location).startswith("file:"):
            artifact_location = str(Path(artifact_location).expanduser().resolve())
        self.run_id_file = Path(run_id_file) if run_id_file else None
        if isinstance(kwargs.get("tags"), Mapping):  # a DictConfig from Hydra: MLFlowLogger adds the run name to it
            kwargs["tags"] = {str(k): str(v) for k, v in kwargs["tags"].items()}
        run_id = kwargs.pop("run_id", None)
        if run_id is None and self.run_id_file is not None and self.run_id_file.is_file():
            run_id = self.run_id_file.read_text().strip() or None
        from filelock import FileLock

        db = _sqlite_path(tracking_uri)
        # MlflowClient creates a new database's tables (alembic migrations) when it is constructed: the jobs of a
        # sweep that start together take turns, or the second one fails half-way through the migration
        with FileLock(f"{db}.lock") if db else contextlib.nullcontext():
            super().__init__(tracking_uri=tracking_uri, artifact_location=artifact_location, run_id=run_id, **kwargs)
        self._continues = run_id is not None  # a run of an earlier start: values already recorded are skipped
        self._replay_from: int | None = None
        self._recorded: dict[str, set[int]] = {}  # a continued run's steps of each metric (from the resume step)
        self._last_step: dict[str, int] = {}  # the step each metric was last logged at by this process
        self._params: dict[str, str] = {}
        self.skipped = 0  # (metric, step) values not logged because the run has them already

    def truncate_after(self, step: int) -> int:
        """Resuming at logger step ``step``: the values the run has at ``step`` or later are the ones the resumed
        job logs again; they are kept (MLflow cannot delete them) and the repeats skipped. Returns 0 (nothing is
        dropped)."""
        self._replay_from = int(step)
        return 0

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The ``MlflowClient``, with the experiment and run created (or the run of ``run_id_file`` reopened) on
        first use (global rank 0; a dummy elsewhere)."""
        if self._initialized:
            return self._mlflow_client
        from mlflow.exceptions import MlflowException

        client = self._mlflow_client
        if self._run_id is None and self._experiment_id is None:
            self._experiment_id = self._get_or_create_experiment()
        if self._continues:
            try:
                run = client.get_run(self._run_id)
            except MlflowException as err:
                raise ValueError(self._missing_run_message(f"it cannot be read ({err.message})")) from err
            if run.info.lifecycle_stage == "deleted":
                raise ValueError(self._missing_run_message("it was deleted"))
        super().experiment  # noqa: B018  (Lightning creates the experiment / run, or reopens the run)
        if self._continues:
            self._reopen(client)
        else:
            self._write_run_id()
        log.info("MLflow: %s run %s of experiment %s in %s; dashboard: mlflow ui --backend-store-uri %s",
                 "continuing" if self._continues else "new", self._run_id, self._experiment_name, self._tracking_uri,
                 self._tracking_uri)
        return client

    def _missing_run_message(self, why: str) -> str:
        return (f"{self.run_id_file or 'run_id'} names the MLflow run {self._run_id}, but {why} in the tracking store "
                f"{self._tracking_uri}. Point logger.mlflow.tracking_uri at the store that has the run, or delete "
                f"{self.run_id_file or 'the run_id'} to start a new MLflow run")

    def _get_or_create_experiment(self) -> str:
        """The id of the experiment named ``experiment_name``, created if missing (a concurrent job of the same
        sweep may create it first)."""
        from mlflow.exceptions import MlflowException

        client = self._mlflow_client
        expt = client.get_experiment_by_name(self._experiment_name)
        if expt is not None and expt.lifecycle_stage != "deleted":
            return expt.experiment_id
        try:
            return client.create_experiment(name=self._experiment_name, artifact_location=self._artifact_location)
        except MlflowException:  # created by another job meanwhile, or a deleted experiment has the name
            expt = client.get_experiment_by_name(self._experiment_name)
            if expt is None or expt.lifecycle_stage == "deleted":
                raise
            return expt.experiment_id

    def _write_run_id(self) -> None:
        if self.run_id_file is None:
            return
        self.run_id_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.run_id_file.with_name(self.run_id_file.name + ".tmp")
        tmp.write_text(f"{self._run_id}\n")
        os.replace(tmp, self.run_id_file)

    def _reopen(self, client: Any) -> None:
        """Mark the run RUNNING again and read back what it has: its params and each metric's steps (those at the
        resume step or later when :meth:`truncate_after` gave one: the resumed job logs no earlier step)."""
        client.update_run(self._run_id, status="RUNNING")
        run = client.get_run(self._run_id)
        self._params = dict(run.data.params)
        start = self._replay_from if self._replay_from is not None else -(2**63)
        for key in run.data.metrics:
            steps = {m.step for m in client.get_metric_history(self._run_id, key) if m.step >= start}
            if steps:
                self._recorded[key] = steps
        if self._replay_from is not None:
            log.info("MLflow run %s: resuming at step %d, %d metric values at that step or later are recorded "
                     "already; the resumed run does not log them again", self._run_id, self._replay_from,
                     sum(map(len, self._recorded.values())))

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log ``metrics`` at ``step`` (MLFlowLogger's ``log_metrics``), leaving out each (metric, step) the run has
        already (:meth:`truncate_after`)."""
        self.experiment  # noqa: B018  (reads back what a continued run has)
        at = step or 0
        keep, names = {}, []
        for key, value in metrics.items():
            name = re.sub(_MLFLOW_BAD_METRIC_CHARS, "", f"{self._prefix}{self.LOGGER_JOIN_CHAR}{key}" if self._prefix
                          else key)
            if self._last_step.get(name) == at or at in self._recorded.get(name, ()):
                self.skipped += 1
            else:
                keep[key] = value
                names.append(name)
        if keep:
            super().log_metrics(keep, step)
            self._last_step.update(dict.fromkeys(names, at))

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any] | Namespace) -> None:
        """Log ``params`` (nested: keys joined with ``/``) as MLflow params: values cut to MLflow's length limit and
        keys cleaned (both with a warning), the params the run has already left out (a changed value: warning,
        the run keeps the first)."""
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        client = self.experiment
        if isinstance(params, Namespace):
            params = vars(params)
        new: dict[str, str] = {}
        cut, renamed, changed = [], [], []
        for key, value in _flatten(dict(params)).items():
            name = re.sub(_MLFLOW_BAD_PARAM_CHARS, "_", key).strip("/")[:MAX_ENTITY_KEY_LENGTH]
            if name != key:
                renamed.append(key)
            text = str(value)
            if len(text) > MAX_PARAM_VAL_LENGTH:
                text = text[:MAX_PARAM_VAL_LENGTH]
                cut.append(name)
            if name in self._params or name in new:
                if self._params.get(name, new.get(name)) != text:
                    changed.append(name)
                continue
            new[name] = text
        if cut:
            rank_zero_warn(f"MLflow keeps param values up to {MAX_PARAM_VAL_LENGTH} characters: cut {cut}")
        if renamed:
            rank_zero_warn(f"MLflow param keys allow letters, digits and _ - . / space: renamed {renamed}")
        if changed:
            rank_zero_warn(f"MLflow run {self._run_id} has other values for {changed} (from an earlier start of this "
                           "run); MLflow params cannot change, it keeps the first values")
        items = [Param(k, v) for k, v in new.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(run_id=self._run_id, params=items[i:i + MAX_PARAMS_TAGS_PER_BATCH],
                             **self._log_batch_kwargs)
        self._params.update(new)

