"""A CSV logger that survives resuming (Lightning's CSVLogger deletes an existing ``metrics.csv``)."""

from __future__ import annotations

import csv
import os

from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only


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
