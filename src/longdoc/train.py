"""Training, top to bottom: composed config -> :func:`longdoc.config.check_config` ->
:func:`longdoc.config.apply_task_defaults` -> :func:`build` (data module, module, callbacks, loggers, trainer) ->
:func:`fit` -> :func:`run_test` -> ``metrics.json``.

Shaped after ashleve/lightning-hydra-template: everything is instantiated from the composed config,
``seed_everything`` first, then fit, then test on the best checkpoint.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import string
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from .config import (ConfigError, apply_task_defaults, check_config, check_machine, check_resume_config,
                     extends_training, flatten_config, reconcile_callbacks, resolve_wandb_offline, task_of,
                     validation_disabled)
from .lightning import AtomicCheckpointIO, FinalValidation, LongDocModule, exit_after_signal
from .models import compile_model
from .models.init_from import freeze_embeddings, init_encoder_from
from .pretrained import init_from_pretrained, pretrained_model_config, pretrained_spec
from .runtime import tune_cpu_allocator

log = logging.getLogger("longdoc")


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a mapping of named configs (callbacks / loggers)."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(c) for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]


#: Checkpoint files ``ckpt_path=auto`` / ``last`` consider in ``<run dir>/checkpoints`` (``last.ckpt`` after each
#: validation and at a preemption stop, ``last-step.ckpt`` every ``callbacks.last_every_n_steps`` steps).
RESUME_GLOBS = ("last*.ckpt",)


def describe_unreadable(path: Path, err: BaseException) -> str:
    """Why the checkpoint file ``path`` could not be read, in words (the low-level error in brackets)."""
    import zipfile

    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as os_err:
        return f"it cannot be opened ({os_err.strerror or os_err})"
    low = f"{type(err).__name__}: {err}".splitlines()[0][:200]
    if size == 0:
        return f"it is empty (0 bytes): the write was cut off before any data [{low}]"
    if head != b"PK\x03\x04":
        return f"it is not a PyTorch checkpoint ({size} bytes that do not start as a zip archive) [{low}]"
    if not zipfile.is_zipfile(path):
        return f"it is truncated ({size} bytes, the zip archive's directory at its end is missing: the write was cut " \
               f"off) [{low}]"
    if isinstance(err, KeyError):
        return f"it is a PyTorch file but not a Lightning training checkpoint (no {err})"
    return f"it could not be loaded [{low}]"


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """``{"global_step", "config"}`` of a Lightning checkpoint written by :func:`train` (``config``: the resolved run
    config the module saved, or None), read through ``torch.load(mmap=True)`` (the tensors stay on disk). The resumed
    run logs again from that logger step on: the rows of batches ``< global_step`` were logged before the checkpoint
    was written or right after it, by the batch it followed.

    Raises:
        ConfigError: the file is missing, truncated, not a checkpoint, or has no ``global_step`` (names the file and
            says why in words: :func:`describe_unreadable`).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={str(path)!r} does not exist; give a checkpoint file, a run directory, `auto` "
                          "or `last`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        step = int(ckpt["global_step"])
    except Exception as err:  # RuntimeError (zip), UnpicklingError, EOFError, KeyError, ...
        raise ConfigError(f"checkpoint {path} cannot be read: {describe_unreadable(path, err)}. Pass another file as "
                          "ckpt_path=<file>, or ckpt_path=auto to take the newest readable one of its run "
                          "directory") from err
    config = (ckpt.get("hyper_parameters") or {}).get("config")
    return {"global_step": step, "config": config if isinstance(config, dict) else None}


def newest_checkpoint(ckpt_dir: Path) -> tuple[str | None, dict[str, Any]]:
    """The newest readable ``last*.ckpt`` of ``ckpt_dir`` (most steps, then newest file) and its
    :func:`read_checkpoint_meta`; unreadable ones are skipped with a warning that names each and says why. ``(None,
    {})`` when there is none."""
    found: list[tuple[int, float, Path, dict[str, Any]]] = []
    for path in sorted({p for g in RESUME_GLOBS for p in ckpt_dir.glob(g)}):
        try:
            meta = read_checkpoint_meta(path)
        except ConfigError as err:
            log.warning("skipping unreadable checkpoint %s: %s", path,
                        describe_unreadable(path, err.__cause__) if err.__cause__ is not None else err)
            continue
        found.append((meta["global_step"], path.stat().st_mtime, path, meta))
    if not found:
        return None, {}
    _, _, path, meta = max(found, key=lambda f: (f[0], f[1]))
    return str(path), meta


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> tuple[str | None, dict[str, Any]]:
    """The checkpoint to resume from and its :func:`read_checkpoint_meta`.

    * ``None``: start fresh.
    * ``"auto"``: the newest readable ``last*.ckpt`` of ``<output_dir>/checkpoints`` (:func:`newest_checkpoint`);
      none: start fresh. The log says which.
    * ``"last"``: as ``auto``, but no checkpoint is an error.
    * a run directory (one holding ``checkpoints/``): its newest readable ``last*.ckpt``, as ``auto``.
    * a file: that file, which must be readable.

    Raises:
        ConfigError: ``last`` or a run directory with no readable checkpoint; a path that is missing or unreadable
            (names it).
    """
    if ckpt_path is None:
        return None, {}
    given = Path(str(ckpt_path))
    if str(ckpt_path) not in ("auto", "last") and not given.is_dir():
        return str(ckpt_path), read_checkpoint_meta(ckpt_path)
    ckpt_dir = Path(output_dir) / "checkpoints"
    if given.is_dir():
        ckpt_dir = given / "checkpoints" if (given / "checkpoints").is_dir() else given
    path, meta = newest_checkpoint(ckpt_dir)
    if path is not None:
        log.info("ckpt_path=%s: resuming from %s (global step %d)", ckpt_path, path, meta["global_step"])
        return path, meta
    if given.is_dir():
        held = sorted(p.name for p in ckpt_dir.iterdir())[:12]
        raise ConfigError(f"ckpt_path={ckpt_path} is a directory without a readable last*.ckpt in {ckpt_dir} (it holds "
                          f"{held or 'nothing'}); pass a checkpoint file (ckpt_path=<dir>/checkpoints/last.ckpt) or a "
                          "run directory that train.py wrote")
    if str(ckpt_path) == "last":
        raise ConfigError(f"ckpt_path=last but there is no readable last*.ckpt in {ckpt_dir}; to resume an earlier "
                          "run, reuse its directory: `python train.py hydra.run.dir=<that run's dir> ckpt_path=last`, "
                          "or pass the checkpoint file: ckpt_path=<path>/last.ckpt")
    log.info("ckpt_path=auto: no checkpoint in %s, starting fresh", ckpt_dir)
    return None, {}


#: What a run writes into its directory besides Hydra's ``.hydra/`` and ``<task_name>.log``; a fresh start in a
#: directory holding any of these moves them aside (:func:`move_earlier_attempt`).
RUN_OUTPUTS = ("checkpoints", "csv", "tensorboard", "wandb", "wandb_run_id", "mlflow_run_id", "metrics.json",
               "config.yaml")


def move_earlier_attempt(out_dir: Path) -> Path | None:
    """Before a fresh start in ``out_dir``: move the outputs of an earlier attempt (:data:`RUN_OUTPUTS`: logs,
    checkpoints, metrics, tracking run ids) into ``out_dir/earlier-attempt-<n>/``, so the new run neither appends
    to their logs nor mixes their checkpoints, and log what moved. Returns the folder (None when nothing was there)."""
    found = [out_dir / name for name in RUN_OUTPUTS if (out_dir / name).exists()]
    if not found:
        return None
    n = 1
    while (out_dir / f"earlier-attempt-{n}").exists():
        n += 1
    dest = out_dir / f"earlier-attempt-{n}"
    dest.mkdir()
    for path in found:
        path.rename(dest / path.name)
    log.warning("starting fresh in %s, which holds the outputs of an earlier attempt: moved %s into %s (nothing of "
                "them is used by this run)", out_dir, ", ".join(p.name for p in found), dest)
    return dest


def setup_resumable_loggers(logger_cfg: DictConfig, out_dir: Path, resume_step: int | None) -> None:
    """Make the loggers continue a resumed run instead of starting a second one (in place, before instantiation).

    * wandb: the run id is kept in ``<out_dir>/wandb_run_id`` (written on global rank 0 at the first start) and
      passed as ``id`` with ``resume="allow"``, so a resumed or requeued run logs into the same wandb run.
    * TensorBoard: resuming at global step ``resume_step``, ``purge_step=resume_step`` hides the events the
      interrupted run wrote at that step and after (TensorBoard's ``SummaryWriter`` purge).
    """
    wb = logger_cfg.get("wandb")
    if wb is not None and wb.get("id") is None:
        id_file = out_dir / "wandb_run_id"
        if id_file.is_file():
            run_id = id_file.read_text().strip()
        else:
            run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
            if rank_zero_only.rank == 0:
                id_file.write_text(run_id + "\n")
        with open_dict(wb):
            wb.id = run_id
            wb.resume = wb.get("resume") or "allow"
    tb = logger_cfg.get("tensorboard")
    if tb is not None and resume_step is not None:
        with open_dict(tb):
            tb.purge_step = int(resume_step)


def _run_name_and_group(cfg: DictConfig) -> tuple[str, str | None]:
    """wandb run name (attention + the command-line overrides) and group (the sweep, for multirun)."""
    name, group = f"{cfg.get('task_name', 'train')}-{cfg.attention.name}", None
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        overrides = hc.job.override_dirname
        if overrides:
            name = f"{name}-{overrides}"
        if hc.mode == RunMode.MULTIRUN:
            group = Path(hc.sweep.dir).name
    except ValueError:  # not launched through @hydra.main (compose API in tests)
        pass
    return name[:128], group


def _finish_loggers(loggers: list[Any]) -> None:
    """Close wandb runs so their offline files are complete (Lightning leaves them open)."""
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger" and getattr(lg, "_experiment", None) is not None:
            lg.experiment.finish()


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, torch.Tensor))}


def best_validation_value(trainer: pl.Trainer, metric: str, last_value: float | None) -> float | None:
    """The best ``metric`` of the run: the checkpoint callback's ``best_model_score`` when it monitors ``metric``
    (the validation the tested checkpoint came from), else the last value logged."""
    ckpt_cb = trainer.checkpoint_callback
    if ckpt_cb is not None and getattr(ckpt_cb, "monitor", None) == metric and ckpt_cb.best_model_score is not None:
        return float(ckpt_cb.best_model_score)
    return last_value


def build_datamodule(cfg: DictConfig) -> Any:
    """``cfg.data`` instantiated (no data is read: that is ``prepare_data`` / ``setup``).

    Raises:
        ConfigError: the data module's constructor refused a value (its message names the key).
    """
    try:
        return hydra.utils.instantiate(cfg.data, _convert_="all")  # plain lists / dicts: weights_only-safe checkpoints
    except Exception as err:  # hydra wraps constructor errors; surface the original message
        raise ConfigError(f"data: {getattr(err, '__cause__', None) or err}") from err


def pretrained_sizes(cfg: DictConfig, datamodule: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """With ``model.pretrained``: the model config with the checkpoint's architecture and its vocabulary / pad id
    (:func:`longdoc.pretrained.pretrained_model_config`), checked against the data's tokenizer; else ``cfg.model``
    and the data's sizes.

    Raises:
        ConfigError: the checkpoint's errors; data tokenized otherwise than by the checkpoint's tokenizer (another
            pad id, more ids than its vocabulary) or longer than its positions (names the keys).
    """
    model = OmegaConf.to_container(cfg.model, resolve=True)
    sizes = {"vocab_size": datamodule.vocab_size, "pad_id": datamodule.pad_id}
    try:
        if pretrained_spec(model) is None:
            return model, sizes
        model, ckpt = pretrained_model_config(model, datamodule.max_seq_len)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    tokenizer = getattr(datamodule, "tokenizer_file", None)
    if tokenizer is None:
        raise ConfigError("model.pretrained needs data tokenized by the checkpoint's tokenizer.json: set "
                          "data.tokenizer_file (it follows model.pretrained.path in the text data configs)")
    if datamodule.pad_id != ckpt["pad_id"] or datamodule.vocab_size > ckpt["vocab_size"]:
        raise ConfigError(f"data.tokenizer_file={tokenizer} gives pad id {datamodule.pad_id} and "
                          f"{datamodule.vocab_size} ids, the checkpoint has pad_token_id={ckpt['pad_id']} and "
                          f"vocab_size={ckpt['vocab_size']}: use the checkpoint's own tokenizer (leave "
                          "data.tokenizer_file at its default, which follows model.pretrained.path)")
    return model, ckpt


def build_module(cfg: DictConfig, datamodule: Any) -> LongDocModule:
    """The LightningModule of ``cfg.model`` / ``optimizer`` / ``scheduler`` for the task (``cfg.task``, else
    ``datamodule``'s: :func:`longdoc.config.task_of`), the ``mlm`` masking settings and ``datamodule``'s sizes;
    with ``model.pretrained`` the architecture and vocabulary are the HF checkpoint's and its weights are copied in
    (:func:`pretrained_sizes`, :func:`longdoc.pretrained.init_from_pretrained`, logged); then with
    ``model.init_from`` its encoder starts from that checkpoint's (:func:`longdoc.models.init_from.init_encoder_from`,
    logged), and ``model.freeze_embeddings`` stops the embeddings' gradients; ``model.compile`` compiles the encoder's
    blocks (:func:`longdoc.models.compile_model`).

    Raises:
        ConfigError: a model setting its constructor refused, an ``init_from`` checkpoint that is missing, unreadable
            or of other sizes, or a ``model.pretrained`` checkpoint that does not fit (the message names the key /
            the tensor).
    """
    model, sizes = pretrained_sizes(cfg, datamodule)
    try:
        module = LongDocModule(
            model=model,
            num_classes=datamodule.num_classes,
            vocab_size=sizes["vocab_size"],
            max_seq_len=datamodule.max_seq_len,
            pad_id=sizes["pad_id"],
            optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
            scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
            config=OmegaConf.to_container(cfg, resolve=True),
            task=task_of(cfg),
            data_task=getattr(datamodule, "task", "classification"),
            mlm=OmegaConf.to_container(cfg.mlm, resolve=True) if cfg.get("mlm") is not None else None,
            special_ids=getattr(datamodule, "special_ids", None),
            mask_token_id=getattr(datamodule, "mask_token_id", None),
            label_names=getattr(datamodule, "label_names", None),
            qa=OmegaConf.to_container(cfg.qa, resolve=True) if cfg.get("qa") is not None else None,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if pretrained_spec(model) is not None:
        try:
            init_from_pretrained(module.net.encoder, model)
        except ValueError as err:
            raise ConfigError(str(err)) from err
    init_from = OmegaConf.select(cfg, "model.init_from")
    if init_from:
        try:
            init_encoder_from(module.net.encoder, init_from,
                              extend_positions=bool(OmegaConf.select(cfg, "model.init_extend_positions")))
        except (FileNotFoundError, ValueError) as err:
            raise ConfigError(str(err)) from err
    if OmegaConf.select(cfg, "model.freeze_embeddings"):
        freeze_embeddings(module.net.encoder)
    if OmegaConf.select(cfg, "model.compile"):
        compile_model(module.net)  # last: compiled graphs are specialised on requires_grad
    return module


def validate_config(cfg: DictConfig) -> tuple[Any, LongDocModule]:
    """Check ``cfg`` (:func:`longdoc.config.check_config`), adapt it to its task
    (:func:`longdoc.config.apply_task_defaults`) and build the data module and the LightningModule from it.
    Only objects are built: no data are read or downloaded.

    Raises:
        ConfigError: any invalid value, naming its key and the fix.
    """
    check_config(cfg)
    apply_task_defaults(cfg, task_of(cfg))
    reconcile_callbacks(cfg)
    datamodule = build_datamodule(cfg)
    return datamodule, build_module(cfg, datamodule)


@dataclass
class Run:
    """Everything one training job is made of (:func:`build`)."""

    datamodule: Any
    module: LongDocModule
    callbacks: list[Any]
    loggers: list[Any]
    trainer: pl.Trainer
    ckpt_path: str | None  # the checkpoint fit resumes from (None: fresh)


def build_loggers(cfg: DictConfig, out_dir: Path, resume_step: int | None) -> list[Any]:
    """The loggers of ``cfg.logger``, set up to continue a resumed run (:func:`setup_resumable_loggers`; the CSV
    rows at ``resume_step`` and after are dropped, since the resumed run logs them again)."""
    if not cfg.get("logger"):
        return []
    resolve_wandb_offline(cfg.logger)
    setup_resumable_loggers(cfg.logger, out_dir, resume_step)
    wb = cfg.logger.get("wandb")
    if wb is not None:
        name, group = _run_name_and_group(cfg)
        with open_dict(wb):
            wb.name = wb.get("name") or name
            wb.group = wb.get("group") or group
    loggers = instantiate_group(cfg.logger)
    for lg in loggers:
        if resume_step is not None and hasattr(lg, "truncate_after"):
            dropped = lg.truncate_after(resume_step)
            if dropped:
                log.info("%s: dropped %d logged rows at step >= %d (the resumed run logs them again)",
                         type(lg).__name__, dropped, resume_step)
    return loggers


@dataclass
class Plan:
    """What :func:`plan_run` decided before anything in the run directory changes."""

    datamodule: Any
    module: LongDocModule
    ckpt_path: str | None  # the checkpoint fit resumes from (None: fresh)
    ckpt_meta: dict[str, Any]
    changed: list[tuple[str, Any, Any]]  # config differences to the checkpoint's run (all allowed ones)


def plan_run(cfg: DictConfig) -> Plan:
    """Check the config, apply the task's defaults and build the data module and module (no data read), check the
    machine has the accelerator asked for (:func:`longdoc.config.check_machine`), resolve ``cfg.ckpt_path``
    (:func:`resolve_ckpt_path`) and, when resuming, compare the config with the checkpoint's run
    (:func:`longdoc.config.check_resume_config`). Writes nothing into the run directory.

    Raises:
        ConfigError: an invalid value, a missing accelerator, an unreadable ``ckpt_path``, or a resume with other
            architecture / data / task settings than the run's (listing them).
    """
    out_dir = Path(cfg.paths.output_dir)
    datamodule, module = validate_config(cfg)
    check_machine(cfg)
    ckpt_path, ckpt_meta = resolve_ckpt_path(cfg.get("ckpt_path"), out_dir)
    changed: list[tuple[str, Any, Any]] = []
    if ckpt_path is not None and ckpt_meta.get("config") is not None:
        changed = check_resume_config(ckpt_meta["config"], dict(module.hparams["config"]), f"checkpoint {ckpt_path}",
                                      str(out_dir))
    return Plan(datamodule, module, ckpt_path, ckpt_meta, changed)


def build(cfg: DictConfig, plan: Plan | None = None) -> Run:
    """From the checked plan (:func:`plan_run`, made here when not given): the callbacks (plus
    :class:`~longdoc.lightning.FinalValidation`, so fit never ends unvalidated), loggers and trainer (checkpoints
    written atomically: :class:`~longdoc.lightning.AtomicCheckpointIO`). A fresh start moves an earlier attempt's
    outputs aside (:func:`move_earlier_attempt`). Writes the resolved ``config.yaml`` into the run directory.

    Raises:
        ConfigError: an invalid value or an unreadable ``ckpt_path``, before any data work.
    """
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan or plan_run(cfg)
    if rank_zero_only.rank == 0:
        if plan.ckpt_path is None:
            move_earlier_attempt(out_dir)
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    loggers = build_loggers(cfg, out_dir, plan.ckpt_meta.get("global_step"))
    callbacks = [*instantiate_group(cfg.get("callbacks")), FinalValidation()]
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                                  plugins=[AtomicCheckpointIO()])
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return Run(plan.datamodule, plan.module, callbacks, loggers, trainer, plan.ckpt_path)


def finished_metrics(cfg: DictConfig, plan: Plan) -> dict[str, float] | None:
    """The metrics of a run that finished before in this run directory (``metrics.json`` beside the checkpoint being
    resumed) when this config asks for no more training (no larger ``max_steps`` / ``max_epochs`` / ``max_time``:
    :func:`longdoc.config.extends_training`), else None (train, or continue training)."""
    done = Path(cfg.paths.output_dir) / "metrics.json"
    if plan.ckpt_path is None or not done.is_file() or extends_training(plan.changed):
        return None
    try:
        return json.loads(done.read_text())
    except (OSError, ValueError) as err:
        log.warning("%s cannot be read (%s): testing the run's checkpoint again", done, err)
        return None


def fit(run: Run) -> None:
    """``trainer.fit``; a preemption signal (or Ctrl-C) ends it with the job handed back to its launcher.

    Raises:
        ConfigError: ``trainer.val_check_interval`` (an integer) larger than an epoch, naming the two fixes (Lightning
            finds it once the data is loaded, before the first step).
        SystemExit: stopped by a signal (:func:`longdoc.lightning.exit_after_signal`), never with code 0.
    """
    # LongDocDataModule saves and restores the position inside the epoch itself (state_dict / skip_batches), which
    # Lightning's check for stateful dataloaders cannot see
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")
    try:
        run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=run.ckpt_path)
    except SIGTERMException:
        _finish_loggers(run.loggers)
        exit_after_signal(run.callbacks, run.trainer.global_rank)
    except ValueError as err:  # Lightning checks val_check_interval against the epoch once the data is loaded
        found = re.search(r"val_check_interval` \((\d+)\) must be less than or equal to the number of the training "
                          r"batches \((\d+)\)", str(err))
        if found is None:
            raise
        interval, batches = found.groups()
        raise ConfigError(f"trainer.val_check_interval={interval} is more than the {batches} training batches of an "
                          f"epoch: set trainer.val_check_interval to at most {batches} (or a fraction of the epoch, "
                          "e.g. 0.5), or trainer.check_val_every_n_epoch=null to count it in optimizer steps across "
                          "epochs") from err


def run_test(run: Run) -> dict[str, float]:
    """Test the best checkpoint (the current weights when there is none, with a warning saying why)."""
    trainer = run.trainer
    ckpt = None
    if trainer.checkpoint_callback is not None and getattr(trainer.checkpoint_callback, "best_model_path", ""):
        ckpt = "best"
    elif not trainer.enable_validation:
        log.warning("trainer.limit_val_batches=0: this run never validates, so there is no best checkpoint; testing "
                    "the last weights")
    else:
        log.warning("no best checkpoint (fast_dev_run or checkpointing off): testing the current weights")
    results = trainer.test(run.module, datamodule=run.datamodule, ckpt_path=ckpt)
    return _scalars(results[0] if results else {})


#: The stages of a self-pretraining recipe, in order (``stages`` in the config; ``stage=<name>`` runs one).
STAGE_ORDER = ("pretrain", "finetune")


def command_line_keys(cfg: DictConfig) -> list[str]:
    """The config keys set on the command line as values (``trainer.max_steps=6``, ``+model.x=1``; not group choices
    such as ``attention=lsh``, not ``stages.*`` / ``stage`` / ``hydra.*``), parsed with Hydra's override grammar from
    the running job's overrides (``HydraConfig``, or a ``hydra`` node of ``cfg``); [] outside Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if HydraConfig.initialized():
        task = list(HydraConfig.get().overrides.task)
    else:
        task = list(OmegaConf.select(cfg, "hydra.overrides.task", default=None) or [])
    keys = []
    for override in OverridesParser.create().parse_overrides(task):
        key = override.key_or_group
        if override.is_delete() or override.package or key.startswith(("stages", "stage", "hydra")):
            continue
        if OmegaConf.is_dict(OmegaConf.select(cfg, key, default=None)):
            continue  # a group choice (or a whole mapping): the stages' keys below it stay theirs
        keys.append(key)
    return keys


def stage_config(cfg: DictConfig, name: str, output_dir: str | Path, init_from: str | Path | None,
                 command_line: list[str] | None = None) -> DictConfig:
    """``cfg`` with ``cfg.stages.<name>`` merged over it (a nested mapping, e.g. ``{task: mlm, trainer: {max_steps:
    800}}``),
    ``stages`` / ``stage`` removed, its own ``paths.output_dir`` and, for ``finetune``, ``model.init_from`` (unless
    the overrides set one). Interpolations (``optimized_metric`` follows ``task``) resolve in the stage's config.
    A key of ``command_line`` (default :func:`command_line_keys`) that the stage sets too takes the command line's
    value in every stage (``trainer.max_steps=6`` shortens both stages), with a log line naming the stage value it
    replaces; ``stages.<name>.<key>=...`` sets one stage's value.

    Raises:
        ConfigError: ``cfg.stages`` has no ``name``.
    """
    stages = cfg.get("stages") or {}
    if name not in stages:
        raise ConfigError(f"stage={name} but the config has no stages.{name}: choose one of {list(stages)}, or use an "
                          "experiment=spt/<data> preset")
    base = cfg.copy()
    with open_dict(base):
        base.pop("stages", None)
        base.pop("stage", None)
    out = OmegaConf.merge(base, stages[name] or {})
    stage_keys = list(flatten_config(OmegaConf.to_container(stages[name] or {}, resolve=False)))
    for key in command_line_keys(cfg) if command_line is None else command_line:
        replaced = [k for k in stage_keys if k == key or k.startswith(key + ".") or key.startswith(k + ".")]
        if replaced:
            value = OmegaConf.select(base, key)
            OmegaConf.update(out, key, value, merge=False, force_add=True)
            log.info("stage %s: %s=%s from the command line applies to this stage too (replaces %s); set "
                     "stages.%s.%s=... for one stage only", name, key, value,
                     ", ".join(f"stages.{name}.{k}={OmegaConf.select(stages[name], k)}" for k in replaced), name, key)
    with open_dict(out):
        out.paths.output_dir = str(output_dir)
        if init_from is not None and not OmegaConf.select(out, "model.init_from"):
            out.model.init_from = str(init_from)
    return out


def train_stages(cfg: DictConfig) -> dict[str, float]:
    """Self-pretraining then fine-tuning in one run directory (Amos, Berant & Gupta 2023): each stage of
    :data:`STAGE_ORDER` present in ``cfg.stages`` trains in ``<run dir>/<stage>/`` with its own checkpoints and logs
    (so each resumes on its own after a preemption: ``ckpt_path=auto``), ``finetune`` from ``pretrain``'s encoder
    (``model.init_from``). A stage whose ``metrics.json`` exists is finished and not run again. ``stage=<name>`` runs
    only that stage (``stage=finetune`` then needs ``model.init_from``). Every stage's config is checked before the
    first one starts. Writes ``<run dir>/metrics.json`` with each stage's metrics under ``<stage>/`` and returns it.

    Raises:
        ConfigError: an invalid stage config (before any stage runs); ``stage`` not in ``stages``.
    """
    out_dir = Path(cfg.paths.output_dir)
    only = cfg.get("stage")
    names = [only] if only else [n for n in STAGE_ORDER if n in (cfg.get("stages") or {})]
    unknown = set(cfg.get("stages") or {}) - set(STAGE_ORDER)
    if unknown:
        raise ConfigError(f"stages has unknown entries {sorted(unknown)}: the stages are {list(STAGE_ORDER)}")
    configs = {}
    for name in names:
        init = out_dir / "pretrain" if name == "finetune" and not only else None
        configs[name] = stage_config(cfg, name, out_dir / name, init)
        check_config(configs[name])
        if name == "finetune" and not OmegaConf.select(configs[name], "model.init_from"):
            raise ConfigError("stage=finetune needs model.init_from=<pretraining run dir or checkpoint>")
    results: dict[str, float] = {}
    for name in names:
        done = out_dir / name / "metrics.json"
        if done.is_file():
            log.info("stage %s: finished before (%s), not run again", name, done)
            metrics = json.loads(done.read_text())
        else:
            log.info("stage %s: training in %s", name, out_dir / name)
            metrics = train(configs[name])
        results.update({f"{name}/{k}": v for k, v in metrics.items()})
    results["optimized_value"] = optimized_value(configs[names[-1]], metrics)  # the last stage's, for sweepers
    if rank_zero_only.rank == 0:
        (out_dir / "metrics.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    return results


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job: build -> fit -> test the best checkpoint -> ``metrics.json``; return the metrics.

    Writes ``config.yaml`` (resolved) and ``metrics.json`` into ``cfg.paths.output_dir``; checkpoints go to
    ``<output_dir>/checkpoints`` (``best.ckpt``, ``last.ckpt``, ``last-step.ckpt``), each written atomically.
    ``cfg.ckpt_path`` (default ``auto``) resumes the newest readable checkpoint of the run directory.
    ``metrics.json`` holds the logged metrics (``test/acc`` for the classifiers, ``test/bpb`` for language
    modelling, ...), ``<optimized_metric>_best`` (the value a sweeper sees: see :func:`best_validation_value`),
    ``wall_time_s`` and the data's baseline: ``majority_acc`` (classification, retrieval), ``unigram_bpb`` (lm) or,
    for multilabel / token_classification / qa, ``baseline_<name>`` for each entry of the data module's
    ``baseline_scores`` dict (e.g. ``baseline_f1_micro`` of the most frequent label set, ``baseline_f1`` of the most
    frequent tag).

    Raises:
        longdoc.config.ConfigError: an invalid configuration or an unreadable ``ckpt_path``, before any data work or
            training.
        SystemExit: stopped by a preemption signal: after ``last.ckpt`` is saved and the job handed back to its
            launcher (:func:`longdoc.lightning.exit_after_signal`); the code is never 0.
    """
    if cfg.get("stages"):
        return train_stages(cfg)
    t0 = time.perf_counter()
    check_config(cfg)  # before the seed is used: `seed=abc` fails naming its key
    pl.seed_everything(cfg.seed, workers=True)
    plan = plan_run(cfg)
    out_dir = Path(cfg.paths.output_dir)
    earlier = finished_metrics(cfg, plan)
    if earlier is not None:
        log.info("%s finished before (%s, checkpoint at global step %d) and these settings ask for no more training: "
                 "nothing to do (raise trainer.max_steps / max_epochs / max_time to continue it, or start a new run "
                 "directory)", out_dir, out_dir / "metrics.json", plan.ckpt_meta["global_step"])
        return earlier
    continuing = plan.ckpt_path is not None and (out_dir / "metrics.json").is_file()
    previous = json.loads((out_dir / "metrics.json").read_text()) if continuing else {}
    run = build(cfg, plan)
    if OmegaConf.select(cfg, "runtime.cpu_allocator", default="default") == "tuned":
        tune_cpu_allocator()
    fit(run)
    metrics = _scalars(run.trainer.callback_metrics)
    metric = str(cfg.get("optimized_metric") or "")
    if metric:
        best = best_validation_value(run.trainer, metric, metrics.get(metric))
        if best is not None:
            metrics[f"{metric}_best"] = best
    if cfg.get("test"):
        metrics.update(run_test(run))
    _finish_loggers(run.loggers)
    metrics["wall_time_s"] = time.perf_counter() - t0
    dm, task = run.datamodule, run.module.task
    data_task = getattr(dm, "task", "classification")
    if task == "mlm":  # self-pretraining: no baseline of the data's own task applies
        keys = ("test/mlm_acc", "test/bpt", "val/bpt")
    elif task == "lm" and data_task != "lm":
        keys = ("test/bpb", "val/bpb")
    elif task == "lm":
        metrics["unigram_bpb"] = float(getattr(dm, "unigram_bits_per_byte", float("nan")))
        keys = ("test/bpb", "unigram_bpb", "val/bpb")
    elif task in ("multilabel", "token_classification", "qa"):  # baselines: the data module's baseline_scores
        for name, value in dict(getattr(dm, "baseline_scores", None) or {}).items():
            metrics[f"baseline_{name}"] = float(value)
        keys = {"multilabel": ("test/f1_micro", "test/f1_macro", "baseline_f1_micro", "val/f1_micro"),
                "token_classification": ("test/f1", "test/token_acc", "baseline_f1", "val/f1"),
                "qa": ("test/exact_match", "test/f1", "val/f1")}[task]
    else:
        metrics["majority_acc"] = float(getattr(dm, "majority_class_accuracy", float("nan")))
        keys = ("test/acc", "majority_acc", "val/acc")
    if previous:  # a finished run trained further: keep what it logged before, add this part's wall time
        metrics = {**previous, **metrics, "wall_time_s": metrics["wall_time_s"] + float(previous.get("wall_time_s", 0))}
    if run.trainer.is_global_zero:
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        summary = ", ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)
        log.info("done in %.1f s: %s; outputs in %s", metrics["wall_time_s"], summary, out_dir)
    return metrics


def optimized_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """What ``train.py`` returns to a sweeper: the best validation value of ``cfg.optimized_metric`` (never a test
    metric; its direction follows the name: see :func:`longdoc.resolvers.metric_mode`).

    Raises:
        ConfigError: ``optimized_metric`` names a test metric, or one the run did not log.
    """
    if cfg.get("stages"):  # train_stages: the last stage's (its own optimized_metric)
        return metrics.get("optimized_value")
    metric = cfg.get("optimized_metric")
    if not metric:
        return None
    if validation_disabled(cfg) and f"{metric}_best" not in metrics and metric not in metrics:
        log.info("trainer.limit_val_batches=0: no %s to report (the run never validated)", metric)
        return None
    if str(metric).startswith("test/"):
        raise ConfigError(f"optimized_metric={metric} is a test metric: a sweep must select on validation, e.g. "
                          "optimized_metric=val/acc")
    value = metrics.get(f"{metric}_best", metrics.get(metric))
    if value is None:
        raise ConfigError(f"optimized_metric={metric} was not logged by this run (logged: "
                          f"{sorted(k for k in metrics if k.startswith('val/'))}); set it to one of those")
    return float(value)
