"""Callbacks: throughput (tokens per second), peak memory, periodic last checkpoints and a DDP parameter-consistency
check (preemption: :mod:`longdoc.lightning.preemption`)."""

from __future__ import annotations

import logging
import os
import resource
import sys
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint
import torch

log = logging.getLogger("longdoc")


def peak_host_memory_gib() -> float:
    """Peak resident set size of this process so far, GiB (``getrusage`` ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**30 if sys.platform == "darwin" else 2**20)


class ThroughputMonitor(pl.Callback):
    """Logs throughput and peak memory every ``log_every_n_steps`` training batches.

    * ``train/tokens_per_sec``: real tokens (``padding_mask.sum()``, plus ``padding_mask_2.sum()`` for two-document
      batches) per second of training-batch wall time over the window (validation excluded). On CUDA the device is
      synchronised at the start and end of every batch, so a window counts exactly its own kernels (without the
      synchronisation, queued work of one batch would be timed in the next).
    * ``train/peak_rss_gib``: the process's peak resident set size (GiB), always; ``train/peak_mem_gib``: the CUDA
      allocator's peak (``torch.cuda.max_memory_allocated``, GiB) on CUDA.

    Args:
        log_every_n_steps: window length in batches; ``None`` = the trainer's ``log_every_n_steps``.

    Raises:
        ValueError: ``log_every_n_steps`` < 1.
    """

    def __init__(self, log_every_n_steps: int | None = None):
        super().__init__()
        if log_every_n_steps is not None and log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be >= 1 or null (the trainer's), got {log_every_n_steps}")
        self.log_every_n_steps = log_every_n_steps
        self._tokens = 0
        self._elapsed = 0.0
        self._t0: float | None = None

    @staticmethod
    def _sync(pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._sync(pl_module)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._t0 is None:
            return
        self._sync(pl_module)
        self._elapsed += time.perf_counter() - self._t0
        for sfx in ("", "_2"):  # "_2": the second document of retrieval batches
            ids = batch.get("input_ids" + sfx)
            if ids is None:
                continue
            mask = batch.get("padding_mask" + sfx)
            self._tokens += int(mask.sum()) if mask is not None else ids.numel()
        every = self.log_every_n_steps or max(1, int(getattr(trainer, "log_every_n_steps", 50) or 1))
        if (batch_idx + 1) % every == 0:
            metrics = {"train/tokens_per_sec": self._tokens / max(self._elapsed, 1e-9),
                       "train/peak_rss_gib": peak_host_memory_gib()}
            if pl_module.device.type == "cuda":
                metrics["train/peak_mem_gib"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**30
            pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=1)
            self._tokens, self._elapsed = 0, 0.0


class DDPConsistencyCheck(pl.Callback):
    """At the end of training, compare every parameter across ranks (all-gather of a float64 copy) and
    log ``ddp/param_max_abs_diff``; raise ``RuntimeError`` above ``tolerance`` when ``strict``.

    DDP keeps replicas identical only if every gradient is all-reduced exactly once per step; a custom
    backward (reversible layers) that breaks that shows up here instead of as silently diverging replicas.
    """

    def __init__(self, tolerance: float = 0.0, strict: bool = True):
        super().__init__()
        self.tolerance, self.strict = tolerance, strict
        self.max_abs_diff: float | None = None

    def on_train_end(self, trainer, pl_module):
        if trainer.world_size < 2:
            return
        flat = torch.cat([p.detach().double().flatten() for p in pl_module.parameters()])
        gathered = trainer.strategy.all_gather(flat)  # (world, P)
        self.max_abs_diff = float((gathered - gathered[0:1]).abs().max())
        if trainer.is_global_zero:
            print(f"[longdoc] DDP replicas: max |param(rank r) - param(rank 0)| = {self.max_abs_diff:.3g} "
                  f"over {flat.numel()} parameters and {trainer.world_size} ranks", flush=True)
        if self.strict and self.max_abs_diff > self.tolerance:
            raise RuntimeError(f"DDP replicas diverged: max parameter difference {self.max_abs_diff:.3g} > "
                               f"{self.tolerance}; check the strategy settings (static_graph for reversible layers)")


def save_with_logs(trainer, path: str) -> None:
    """Flush every logger (``logger.save()``: the CSV rows and TensorBoard events buffered so far), then
    ``trainer.save_checkpoint(path)``: when a checkpoint of step S exists, everything logged before it is on
    disk, so a run killed right after the save resumes without a gap in its logs."""
    for lg in trainer.loggers:
        lg.save()
    trainer.save_checkpoint(path)


class LastCheckpoint(Checkpoint):
    """Writes ``<dirpath>/<filename>.ckpt``, the complete training state (weights, optimizer, scheduler, loop
    progress, data position, RNG states), at the end of every validation during fit and when training ends.

    Lightning's ``ModelCheckpoint(save_last=True)`` refreshes ``last.ckpt`` only when it also saves a top-k
    checkpoint, so after the best validation score stops improving it would lag behind; this one never does. As a
    ``Checkpoint`` callback Lightning runs it after the other callbacks (and after the checkpoint callbacks listed
    before it), so the file holds their updated state: ``conf/callbacks/default.yaml`` sets the model checkpoint's
    ``save_on_train_epoch_end: false``, so it records each validation at the validation's end too, not later at the
    epoch's end. The loggers are flushed first (:func:`save_with_logs`).

    Args:
        dirpath: checkpoint directory. filename: file name without ``.ckpt``.
    """

    def __init__(self, dirpath: str, filename: str = "last"):
        super().__init__()
        self.path = os.path.join(dirpath, f"{filename}.ckpt")
        self._saved_step: int | None = None

    def _save(self, trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or trainer.state.fn != "fit":
            return
        if self._saved_step == trainer.global_step:
            return
        save_with_logs(trainer, self.path)
        self._saved_step = trainer.global_step

    def on_validation_end(self, trainer, pl_module):
        if not trainer.should_stop:
            self._save(trainer)
            return
        # a validation run because training stops here (FinalValidation, early stopping, max_time): Lightning counts
        # the batch for the loggers only after it, and a resumed run, no longer stopping, does not replay that count,
        # so save the count as it is after the batch (else a longer rerun logs its steps one too low)
        loop = trainer.fit_loop.epoch_loop
        loop._batches_that_stepped += 1
        try:
            self._save(trainer)
        finally:
            loop._batches_that_stepped -= 1

    def on_train_end(self, trainer, pl_module):
        self._save(trainer)


class PeriodicLastCheckpoint(LastCheckpoint):
    """Writes ``<dirpath>/last-step.ckpt`` every ``every_n_train_steps`` optimizer steps (at the end of the batch
    that completes the step, where Lightning's own step checkpoints are taken and from where its loops resume),
    beside the ``last.ckpt`` written after each validation, so a run killed without a signal loses at most that
    many steps; ``ckpt_path=auto`` resumes from the newer of the two. The loggers are flushed first
    (:func:`save_with_logs`): after a kill -9 only the log row of the batch that wrote the checkpoint (sent to the
    loggers right after it) can be missing.

    Raises:
        ValueError: ``every_n_train_steps`` < 1.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 200, filename: str = "last-step"):
        super().__init__(dirpath=dirpath, filename=filename)
        if every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps must be >= 1, got {every_n_train_steps}; set "
                             "callbacks.last_every_n_steps.every_n_train_steps (or the entry to null)")
        self.every_n_train_steps = int(every_n_train_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every_n_train_steps == 0:
            self._save(trainer)

    def on_validation_end(self, trainer, pl_module):
        pass

    def on_train_end(self, trainer, pl_module):
        pass


class FinalValidation(pl.Callback):
    """Fit never ends without a validation: when the batch that ends training (``trainer.max_steps`` reached, or the
    last batch of the last epoch) comes and no validation has run in this run yet (e.g. ``max_steps`` shorter than
    ``val_check_interval``), it sets ``trainer.should_stop``, which makes Lightning validate after that batch (its
    early-stopping path), so the checkpoint callback writes ``best.ckpt``, testing uses it and the optimized metric
    exists. Whether a validation has run is part of the checkpoint (a resumed run remembers it). Does nothing when
    validation is off (``trainer.limit_val_batches=0``).

    Attributes:
        validated: a (non-sanity) validation has finished in this run.
        forced_at_step: the global step at which this callback asked for the validation (None: it did not).
    """

    def __init__(self) -> None:
        super().__init__()
        self.validated = False
        self.forced_at_step: int | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validated = True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        if self.validated or not trainer.enable_validation:
            return
        last_step = trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        last_epoch = trainer.max_epochs is not None and trainer.max_epochs > 0 and \
            trainer.current_epoch + 1 >= trainer.max_epochs
        if last_step or (last_epoch and trainer.is_last_batch):
            if self.forced_at_step is None and trainer.is_global_zero:
                log.info(
                    "training ends at global step %d before any validation (trainer.val_check_interval=%s): "
                    "validating once now, so best.ckpt exists and the test uses it", trainer.global_step,
                    trainer.val_check_interval)
            self.forced_at_step = trainer.global_step
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"validated": self.validated}

    def load_state_dict(self, state_dict: dict) -> None:
        self.validated = bool(state_dict.get("validated", False))
