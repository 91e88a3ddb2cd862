"""Runs that survive preemption exactly: signal handling, atomic checkpoints, replayable randomness.

* :class:`PreemptionCheckpoint`: the signal a launcher sends before it stops a job (submitit's preemption /
  time-limit signal, ``SIGUSR1`` of Lightning's ``SLURMEnvironment`` under plain ``srun``, ``SIGTERM``) makes the
  run finish the running batch, write ``last.ckpt`` (weights, optimizer, scheduler, loop progress, data position,
  RNG states) and exit non-zero so that the launcher requeues it; :func:`exit_after_signal` does the exit. Ctrl-C
  (``SIGINT``) saves the same way and exits 130 without requeueing; a second Ctrl-C stops at once.
* :class:`AtomicCheckpointIO`: every checkpoint is written to a temporary file, flushed to disk and renamed, so a
  kill during saving leaves the previous checkpoint intact.
* :class:`ReproducibleRNG`: the RNG states go into every checkpoint, and each training batch draws its randomness
  (dropout, LSH rotations) from generators seeded by ``(seed, rank, epoch, batch)``, so a resumed run equals an
  uninterrupted one whatever else consumed random numbers in between (fairseq seeds each update the same way).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.utilities.exceptions import SIGTERMException

from .callbacks import save_with_logs

log = logging.getLogger("longdoc")

#: Environment variable with which submitit names its preemption / time-limit signal (default ``USR2``).
SUBMITIT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"


def submitit_signal() -> signal.Signals | None:
    """The signal submitit sends before a time limit or preemption when this process is a submitit job
    (``SUBMITIT_EXECUTOR`` set), else ``None``.

    Raises:
        ValueError: ``SUBMITIT_PREEMPT_SIGNAL`` names no signal.
    """
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    name = "SIG" + os.environ.get(SUBMITIT_SIGNAL_ENV, "USR2")
    sig = getattr(signal, name, None)
    if sig is None:
        raise ValueError(f"{SUBMITIT_SIGNAL_ENV}={os.environ[SUBMITIT_SIGNAL_ENV]!r} names no signal (e.g. USR2)")
    return sig


class PreemptionCheckpoint(pl.Callback):
    """Stop cleanly on a preemption signal or Ctrl-C: finish the batch, save ``<dirpath>/<filename>.ckpt``, let the
    launcher requeue the job.

    Signals: ``SIGTERM`` (any scheduler), ``SIGUSR1`` (Lightning's ``SLURMEnvironment`` requeue signal, e.g.
    ``sbatch --signal=USR1@90``), ``SIGINT`` (Ctrl-C in a terminal) and, in a submitit job, submitit's signal
    (``SUBMITIT_PREEMPT_SIGNAL``, default ``USR2``). From ``on_fit_start`` on, ``SIGUSR1``, ``SIGINT`` and submitit's
    signal are passed to Lightning's ``SIGTERM`` handler (registered right after ``on_fit_start``), which lets the
    running batch finish and then raises ``SIGTERMException`` at the batch boundary. There, in ``on_exception``, this
    callback writes the checkpoint: the state after the last completed batch, which ``ckpt_path=auto`` resumes at the
    next batch. Registering ``SIGUSR1`` first also keeps Lightning from installing its own SLURM handler, which would
    save inside the signal handler, mid-batch.

    Ctrl-C (``SIGINT``): the first one saves as above and the process exits 130 (128 + 2, what a shell expects of
    an interrupted command), never requeued: a person stopped the run, and rerunning the same command resumes it. The
    handler that was there before (Python's: ``KeyboardInterrupt``) is put back at once, so a second Ctrl-C stops
    immediately without saving (Lightning then exits 1). A run started with ``SIGINT`` ignored (a background job of a
    script, ``nohup``) keeps ignoring it. Under DDP a terminal's Ctrl-C reaches every process; no rank calls
    Lightning's handler (which would signal the other ranks again and run a collective inside the handler, where the
    ranks' collectives can pair up wrongly and hang): the ranks agree with one all-reduce at the end of every training
    batch and after every validation (``reduce_boolean_decision``), so all stop after the same batch even when only
    one rank was signalled.

    Forked DataLoader workers inherit the handler and ignore the signals in it: the training process stops them.

    After ``trainer.fit`` has raised, :func:`exit_after_signal` requeues (submitit's own handler: the launcher's
    ``checkpoint()`` and requeue; ``scontrol requeue`` for ``SIGUSR1`` in a SLURM job that submitit does not run) and
    exits non-zero (128 + the signal number where the launcher sets no code).

    Args:
        dirpath: checkpoint directory. filename: checkpoint name without ``.ckpt``.
        requeue: whether to requeue through the launcher (False: only save and exit).

    Attributes:
        received: the signal number caught (None until one is). saved_path: the checkpoint written (or None).
    """

    def __init__(self, dirpath: str, filename: str = "last", requeue: bool = True):
        super().__init__()
        self.dirpath, self.filename, self.requeue = dirpath, filename, requeue
        self.received: int | None = None
        self.saved_path: str | None = None
        self._previous: dict[int, Any] = {}
        self._pid: int | None = None  # the training process (forked DataLoader workers inherit the handler)
        self._distributed = False  # world size > 1: SIGINT waits for the ranks' agreement at the batch end
        self._sigint_pending = False  # SIGINT caught under DDP, not yet agreed on
        self._interrupted = False  # a first SIGINT was handled: the next one stops at once

    def signals(self) -> list[signal.Signals]:
        """The signals this callback passes on to Lightning's graceful stop (besides SIGTERM itself)."""
        sigs = [signal.SIGINT, signal.SIGUSR1]
        sub = submitit_signal()
        if sub is not None and sub not in sigs and sub != signal.SIGTERM:
            sigs.append(sub)
        return sigs

    def _handle(self, signum: int, frame: Any) -> None:
        if self._pid is not None and os.getpid() != self._pid:
            return  # a forked DataLoader worker: the training process stops it
        if signum == signal.SIGINT:
            self._interrupt(frame)
        if self.received is None:
            self.received = signum
            if signum == signal.SIGINT:
                log.warning("caught SIGINT (Ctrl-C): finishing the running batch, then saving %s/%s.ckpt; press "
                            "Ctrl-C again to stop at once without saving", self.dirpath, self.filename)
            else:
                log.warning("caught %s: finishing the running batch, then saving %s/%s.ckpt",
                            signal.Signals(signum).name, self.dirpath, self.filename)
        self._request_stop(signum, frame)

    def _interrupt(self, frame: Any) -> None:
        """Ctrl-C: put the previous SIGINT handler back so that the next Ctrl-C stops at once; if this already is the
        next one (Lightning's teardown re-installs the handlers it found, this one among them), stop now."""
        previous = self._previous.get(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGINT, previous)
        if not self._interrupted:
            self._interrupted = True
            return
        if callable(previous):
            previous(signal.SIGINT, frame)  # Python's default_int_handler: raises KeyboardInterrupt
        else:
            signal.raise_signal(signal.SIGINT)  # SIG_DFL: the default action ends the process

    def _request_stop(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self._distributed:
            self._sigint_pending = True  # the ranks agree at the end of the batch (_agree_to_stop)
            return
        lightning_stop = signal.getsignal(signal.SIGTERM)  # Lightning's: sets trainer.received_sigterm
        if callable(lightning_stop):
            lightning_stop(signal.SIGTERM, frame)

    def _agree_to_stop(self, trainer: pl.Trainer) -> None:
        """Under DDP: stop every rank after this batch if any rank caught SIGINT (a collective: every rank calls it at
        the same point of the loop)."""
        if not trainer.strategy.reduce_boolean_decision(self._sigint_pending, all=False):
            return
        if self.received is None:
            self.received = signal.SIGINT
        if trainer.received_sigterm:
            return
        # the flag Lightning's SIGTERM handler sets (Trainer.received_sigterm reads it), set without the handler's
        # SIGTERM to the other ranks and in-handler broadcast: the loops raise SIGTERMException at the batch end
        connector = getattr(trainer, "_signal_connector", None)
        if not hasattr(connector, "received_sigterm"):
            raise RuntimeError(f"pytorch_lightning {pl.__version__} has no Trainer._signal_connector.received_sigterm "
                               "(the flag behind Trainer.received_sigterm) to stop the ranks after a Ctrl-C; install "
                               "a pytorch-lightning version within pyproject.toml's range")
        if trainer.is_global_zero:
            log.warning("SIGINT (Ctrl-C): all %d ranks stop after this batch", trainer.world_size)
        connector.received_sigterm = True

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._distributed = trainer.world_size > 1
        if os.name == "nt" or not _in_main_thread():
            return
        self._pid = os.getpid()
        for sig in self.signals():
            current = signal.getsignal(sig)
            if current == self._handle:
                continue  # already installed (a second fit with this callback)
            if sig == signal.SIGINT and current == signal.SIG_IGN:
                continue  # started with Ctrl-C ignored (a background job of a script, nohup): leave it so
            self._previous[sig] = current
            signal.signal(sig, self._handle)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a signal between on_fit_start and Lightning's handler registration reached no graceful stop
        if self.received is not None and not trainer.received_sigterm:
            self._request_stop(self.received, None)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._distributed:
            self._agree_to_stop(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a Ctrl-C during the last validation of the fit would otherwise find no training batch end
        if self._distributed and trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._agree_to_stop(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        if self.received is None:
            self.received = signal.SIGTERM
        path = f"{self.dirpath}/{self.filename}.ckpt"
        with _as_at_epoch_end(trainer):
            save_with_logs(trainer, path)
        self.saved_path = path
        if not trainer.is_global_zero:
            return
        if self.received == signal.SIGINT:
            log.warning("SIGINT (Ctrl-C): saved %s at global step %d; exiting with code 130; rerun the same command "
                        "to resume there (ckpt_path=auto)", path, trainer.global_step)
        else:
            log.warning("%s: saved %s at global step %d; the run resumes there with ckpt_path=auto in the same run "
                        "directory", signal.Signals(self.received).name, path, trainer.global_step)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.restore_handlers()

    def restore_handlers(self) -> None:
        """Put back the handlers that ``on_fit_start`` replaced (submitit's, for a signal during testing)."""
        if not _in_main_thread():
            return
        for sig, handler in self._previous.items():
            if handler is not None:
                signal.signal(sig, handler)

    def requeue_and_exit(self, global_rank: int = 0) -> NoReturn:
        """Hand the stopped job back to its launcher, then exit non-zero.

        * submitit's signal: submitit's own handler (saved in ``on_fit_start``), which calls the Hydra launcher's
          ``checkpoint()`` (the same job again: ``ckpt_path=auto`` resumes it), requeues, and exits itself (code 144
          under the local executor; SLURM requeues with ``scontrol``). On ranks other than 0 it returns.
        * ``SIGUSR1`` in a SLURM job not run by submitit: ``scontrol requeue $SLURM_JOB_ID`` on global rank 0, as
          Lightning's ``SLURMEnvironment`` does.
        * ``SIGINT`` (Ctrl-C) and ``SIGTERM``: nothing to requeue through; exit 130 / 143.

        Raises:
            SystemExit: always; code 128 + the signal number unless the launcher's handler exits with its own.
        """
        signum = self.received or signal.SIGTERM
        previous = dict(self._previous)
        self.restore_handlers()
        sub = submitit_signal()
        if self.requeue and sub is not None and signum == sub and callable(previous.get(sub)):
            previous[sub](signum, None)  # submitit: checkpoint() -> requeue -> sys.exit (rank 0)
        elif self.requeue and signum == signal.SIGUSR1 and os.environ.get("SLURM_JOB_ID") and sub is None:
            if global_rank == 0:
                _scontrol_requeue()
        raise SystemExit(128 + int(signum))


@contextlib.contextmanager
def _as_at_epoch_end(trainer: pl.Trainer):
    """While saving after a stop signal: when Lightning raised the stop at the very end of an epoch (its fit loop
    checks the signal after its epoch-end hooks, with the epoch marked processed and completed and the logger step
    advanced), present the loops as they are at the end of the epoch's last batch, the state :class:`LastCheckpoint`
    saves after a validation there, which resumes at the next epoch's first batch exactly. Saved as it is, that state
    resumes one step and one epoch too far when ``trainer.max_epochs=-1`` (pytorch-lightning 2.6: the next batch is
    logged as global step + 1, an epoch number skipped, other weights). Touches Lightning's loop counters
    (``fit_loop.epoch_progress``, ``fit_loop.epoch_loop._batches_that_stepped``) and puts them back after the save."""
    fit_loop = trainer.fit_loop
    progress = fit_loop.epoch_progress
    at_epoch_end = progress.current.ready > 0 and progress.current.completed == progress.current.ready
    if at_epoch_end:
        for counter in (progress.current, progress.total):
            counter.processed -= 1
            counter.completed -= 1
        fit_loop.epoch_loop._batches_that_stepped -= 1
    try:
        yield
    finally:
        if at_epoch_end:
            for counter in (progress.current, progress.total):
                counter.processed += 1
                counter.completed += 1
            fit_loop.epoch_loop._batches_that_stepped += 1


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _scontrol_requeue() -> None:
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{task}" if array_job and task else os.environ["SLURM_JOB_ID"]
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.error("could not requeue SLURM job %s (%s); resubmit it by hand: the run resumes with ckpt_path=auto "
                  "in the same run directory", job, err)
        return
    if result.returncode == 0:
        log.warning("requeued SLURM job %s", job)
    else:
        log.error("`scontrol requeue %s` failed (exit %d): %s", job, result.returncode, result.stderr.strip())


def exit_after_signal(callbacks: list[Any], global_rank: int = 0) -> NoReturn:
    """After ``trainer.fit`` raised ``SIGTERMException``: requeue through the callbacks' :class:`PreemptionCheckpoint`
    (if any) and exit non-zero, never 0 (Lightning's exception is a ``SystemExit`` with code 0).

    Raises:
        SystemExit: always.
    """
    for cb in callbacks:
        if isinstance(cb, PreemptionCheckpoint):
            cb.requeue_and_exit(global_rank)
    log.error("stopped by a signal with callbacks.preemption off: no checkpoint was written at the stop; "
              "ckpt_path=auto resumes from the newest periodic one")
    raise SystemExit(128 + int(signal.SIGTERM))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` that writes each checkpoint to ``.<name>.tmp-<pid>`` beside it, flushes and
    ``fsync``-s it, then renames it over the target (``os.replace``, atomic on POSIX) and syncs the directory.
    A kill at any moment leaves either the old or the new complete file, never a truncated one.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options, got {storage_options!r}")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        try:
            dir_fd = os.open(target.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)


def _numpy_state_to_plain(state: tuple) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = state
    return {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _numpy_state_from_plain(d: dict[str, Any]) -> tuple:
    return (d["kind"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached_gaussian"])


def rng_states() -> dict[str, Any]:
    """The global RNG states as plain types and tensors (loadable with ``torch.load(weights_only=True)``):
    ``{"python", "numpy", "torch", "cuda"}`` (``cuda``: one ByteTensor per device, empty without CUDA)."""
    py = random.getstate()
    return {"python": [py[0], list(py[1]), py[2]], "numpy": _numpy_state_to_plain(np.random.get_state()),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned (CUDA states only for the devices present)."""
    py = states["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(_numpy_state_from_plain(states["numpy"]))
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        cuda = list(states["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)


def seed_batch(seed: int, rank: int, epoch: int, batch_idx: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and every CUDA device) global generators from
    ``(seed, rank, epoch, batch_idx)`` through ``numpy.random.SeedSequence`` (independent streams per batch)."""
    words = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(rank), int(epoch), int(batch_idx)]).generate_state(2)
    value = (int(words[0]) << 32 | int(words[1])) & 0x7FFF_FFFF_FFFF_FFFF
    random.seed(value)
    np.random.seed(int(words[0]))
    torch.manual_seed(value)


class ReproducibleRNG(pl.Callback):
    """Replayable randomness across a resume.

    * ``on_train_batch_start``: :func:`seed_batch` with ``(seed, global rank, epoch, batch index)``, so the dropout
      masks and LSH rotations of batch ``b`` of epoch ``e`` are the same whether or not the run was interrupted
      before it (and differ between ranks, batches and epochs).
    * Checkpoints hold the global RNG states (Python, NumPy, torch CPU and CUDA, as HF Trainer saves them) under
      ``checkpoint["rng_states"]``; loading one restores them.

    Args:
        seed: the run's seed (``${seed}``).
    """

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        seed_batch(self.seed, trainer.global_rank, trainer.current_epoch, batch_idx)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])
