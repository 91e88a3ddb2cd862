"""Configuration checks that run before any data is generated or any step is trained.

``validate_config(cfg)`` builds the (cheap) data module and model objects from the composed config,
so every constructor check fires at composition time with a message that names the key and the fix.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from .attention import ATTENTION_REGISTRY

log = logging.getLogger("longdoc")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and how to fix it."""


#: Checkpoint selection per task when ``callbacks.model_checkpoint`` monitors another task's default:
#: accuracy for the classifiers (as LRA), bits per byte for language modelling.
TASK_MONITOR: dict[str, tuple[str, str]] = {
    "classification": ("val/acc", "max"),
    "retrieval": ("val/acc", "max"),
    "lm": ("val/bpb", "min"),
}
#: Whether higher (``max``) or lower (``min``) is better, by the last part of a metric's name.
METRIC_MODES: dict[str, str] = {"acc": "max", "loss": "min", "bpb": "min"}
#: Validation metrics each task logs (see ``LongDocModule``) and whether higher is better.
TASK_VAL_METRICS: dict[str, dict[str, str]] = {
    "classification": {"val/acc": "max", "val/loss": "min"},
    "retrieval": {"val/acc": "max", "val/loss": "min"},
    "lm": {"val/bpb": "min", "val/loss": "min"},
}


def _used_attention_keys(cfg: DictConfig) -> list[str]:
    """Config paths of the attention settings the model uses: ``attention`` and, for the other names in
    ``model.attention_layers``, ``attention_options.<name>``."""
    keys = ["attention"]
    main = OmegaConf.select(cfg, "attention.name")
    for name in OmegaConf.select(cfg, "model.attention_layers") or []:
        key = f"attention_options.{name}"
        if name != main and OmegaConf.select(cfg, key) is not None and key not in keys:
            keys.append(key)
    return keys


def make_causal_for_lm(cfg: DictConfig) -> list[str]:
    """Language modelling predicts byte t + 1 from bytes <= t, so every attention the model uses must be
    causal (a bidirectional model would see the byte it predicts). Sets ``causal: true`` where it is false,
    logs one INFO line per key changed, and returns those keys.

    With LSH attention, also logs a warning when ``attention.bucket_size`` is below the sequence length:
    Reformer sorts positions by hash bucket before chunking, so which earlier positions share a chunk with
    position t depends on the buckets of later positions too; the causal mask hides later keys' values but
    not that choice (Kitaev et al. 2020, section 2; exact when one chunk holds the whole sequence).
    """
    changed = []
    for key in _used_attention_keys(cfg):
        node = OmegaConf.select(cfg, key)
        if not node.get("causal", False):
            with open_dict(node):
                node.causal = True
            changed.append(f"{key}.causal")
            log.info("task lm: %s.causal set to true for next-byte prediction", key)
        if node.get("name") == "lsh":
            bucket = node.get("bucket_size")
            sizes = list(bucket) if OmegaConf.is_list(bucket) else [bucket]
            seq_len = OmegaConf.select(cfg, "data.seq_len")
            if seq_len is not None and any(b is not None and b < seq_len for b in sizes):
                log.warning("task lm with lsh attention (%s.bucket_size=%s < data.seq_len=%s): later positions' hash "
                            "buckets decide which earlier positions share a chunk, so bits per byte is not strictly "
                            "causal; set %s.bucket_size >= data.seq_len for an exact causal model", key, bucket,
                            seq_len, key)
    return changed


def select_checkpoint_monitor(cfg: DictConfig, task: str) -> None:
    """Make ``callbacks.model_checkpoint.monitor`` / ``mode`` fit the task.

    A monitor that is another task's default (``val/acc`` max for lm, ``val/bpb`` min for a classifier) is
    replaced by this task's (:data:`TASK_MONITOR`), with an INFO line; any other ``val/...`` monitor must be a
    metric the task logs, with the matching mode. Monitors outside ``val/`` are left alone.

    Raises:
        ConfigError: a ``val/`` metric the task does not log, or ``mode`` the wrong way round.
    """
    mc = OmegaConf.select(cfg, "callbacks.model_checkpoint")
    if mc is None or mc.get("monitor") is None:
        return
    monitor, mode = str(mc.monitor), str(mc.get("mode", "min"))
    logged = TASK_VAL_METRICS[task]
    if monitor not in logged and (monitor, mode) in set(TASK_MONITOR.values()):
        mc.monitor, mc.mode = TASK_MONITOR[task]
        log.info("task %s: callbacks.model_checkpoint.monitor set to %s (mode %s); %s is not logged for this task",
                 task, mc.monitor, mc.mode, monitor)
        return
    if not monitor.startswith("val/"):
        return
    if monitor not in logged:
        raise ConfigError(f"callbacks.model_checkpoint.monitor={monitor} is not logged for task {task}; "
                          f"use one of {sorted(logged)} (e.g. callbacks.model_checkpoint.monitor={TASK_MONITOR[task][0]} "
                          f"callbacks.model_checkpoint.mode={TASK_MONITOR[task][1]})")
    if mode != logged[monitor]:
        raise ConfigError(f"callbacks.model_checkpoint.mode={mode} selects the {'highest' if mode == 'max' else 'lowest'} "
                          f"{monitor}, but lower is {'better' if logged[monitor] == 'min' else 'worse'}; "
                          f"set callbacks.model_checkpoint.mode={logged[monitor]}")


def _positive(cfg: DictConfig, key: str, hint: str = "") -> None:
    val = OmegaConf.select(cfg, key)
    if val is None:
        return
    values = list(val) if OmegaConf.is_list(val) else [val]  # a list holds one value per layer
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(f"{key} must be a positive integer (or a list of them, one per layer), got {val!r}"
                              + (f"; {hint}" if hint else ""))


CPU_ALLOCATORS = ("tuned", "default")


def _is_distributed(trainer: DictConfig) -> bool:
    """Whether the trainer config runs several processes (DDP and its relatives)."""
    strategy = trainer.get("strategy")
    if OmegaConf.is_dict(strategy):
        strategy = strategy.get("_target_", "")
    strategy = str(strategy or "auto").lower()
    if any(s in strategy for s in ("ddp", "fsdp", "deepspeed")):
        return True
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1) or 1
    many = devices == -1 or (isinstance(devices, int) and devices > 1) or (
        OmegaConf.is_list(devices) and len(devices) > 1) or (isinstance(devices, str) and devices not in ("1", "auto"))
    return strategy == "auto" and (many or nodes > 1)


def check_optimizer_in_backward(cfg: DictConfig) -> None:
    """``optimizer.in_backward=true`` steps each parameter from its gradient hook
    (:class:`longdoc.optim.OptimizerInBackward`), so no complete set of gradients ever exists.

    Raises:
        ConfigError: combined with gradient clipping (``trainer.gradient_clip_val``), gradient accumulation
            (``trainer.accumulate_grad_batches`` > 1), fp16 precision (GradScaler unscales after backward) or a
            multi-process strategy (each rank would step on its own gradient before DDP's all-reduce).
    """
    if not OmegaConf.select(cfg, "optimizer.in_backward", default=False):
        return
    trainer = cfg.get("trainer") or OmegaConf.create({})
    why = "optimizer.in_backward=true updates each parameter inside the backward pass"
    clip = trainer.get("gradient_clip_val")
    if clip:
        raise ConfigError(f"{why}, so there is no global gradient norm to clip by: set trainer.gradient_clip_val=null "
                          f"(it is {clip}) or optimizer.in_backward=false")
    accumulate = trainer.get("accumulate_grad_batches", 1)
    if accumulate not in (None, 1):
        raise ConfigError(f"{why}, so gradients cannot be accumulated over batches: set trainer.accumulate_grad_batches=1 "
                          f"(it is {accumulate}; raise data.batch_size instead) or optimizer.in_backward=false")
    precision = str(trainer.get("precision", "32-true"))
    if precision.startswith("16"):
        raise ConfigError(f"{why}, before fp16's gradient scaler could unscale or skip it: use "
                          f"trainer.precision=bf16-mixed or 32-true (it is {precision}), or optimizer.in_backward=false")
    if _is_distributed(trainer):
        raise ConfigError(f"{why}: under DDP each rank would step on its own gradient before the all-reduce and the "
                          "replicas would drift apart; it is for one process: drop trainer=ddp / devices > 1, or set "
                          "optimizer.in_backward=false")


def validate_config(cfg: DictConfig) -> tuple[Any, Any]:
    """Check the composed training config; return the instantiated (datamodule, LightningModule).

    The task comes from the data module's ``task`` attribute ('classification', 'retrieval', 'lm'). Adjusts
    ``cfg`` in place for it: ``lm`` turns on ``causal`` in every attention the model uses
    (:func:`make_causal_for_lm`), and the checkpoint monitor follows the task (:func:`select_checkpoint_monitor`).
    Only objects are built: no data are read or downloaded.

    Raises:
        ConfigError: unknown attention; ``model.n_heads`` not dividing ``model.d_model``; non-positive
            ``attention.bucket_size`` / ``attention.attention_window`` / ``attention.n_hashes``;
            ``position.axial_dims`` not summing to ``model.d_model``; ``position.axial_shape`` whose product
            is smaller than the longest sequence; ``runtime.cpu_allocator`` not tuned / default; ``optimizer.in_backward``
            with clipping, accumulation, fp16 or DDP (:func:`check_optimizer_in_backward`); a checkpoint monitor
            the task does not log (or the wrong mode); an ``optimized_metric`` that is not a validation metric of the
            task;
            any other constructor ``ValueError`` (re-raised with its key), e.g. an unknown task.
    """
    from .lightning import LongDocModule  # local: keeps `import longdoc.config` light

    name = OmegaConf.select(cfg, "attention.name")
    if name not in ATTENTION_REGISTRY:
        raise ConfigError(f"attention.name={name!r} is unknown: choose one of {sorted(ATTENTION_REGISTRY)} "
                          "(e.g. `python train.py attention=lsh`)")
    _positive(cfg, "model.d_model")
    _positive(cfg, "model.n_heads")
    _positive(cfg, "model.depth")
    d_model, n_heads = cfg.model.d_model, cfg.model.n_heads
    if d_model % n_heads:
        divisors = [h for h in range(1, min(d_model, 64) + 1) if d_model % h == 0]
        raise ConfigError(f"model.n_heads={n_heads} does not divide model.d_model={d_model}; "
                          f"set model.n_heads to one of {divisors} or change model.d_model")
    _positive(cfg, "attention.bucket_size", "e.g. attention.bucket_size=64")
    _positive(cfg, "attention.attention_window", "e.g. attention.attention_window=64")
    _positive(cfg, "attention.n_hashes", "e.g. attention.n_hashes=2")
    allocator = OmegaConf.select(cfg, "runtime.cpu_allocator", default="default")
    if allocator not in CPU_ALLOCATORS:
        raise ConfigError(f"runtime.cpu_allocator={allocator!r} is unknown: choose one of {list(CPU_ALLOCATORS)} "
                          "(tuned = glibc reuses freed memory, see longdoc.runtime)")
    check_optimizer_in_backward(cfg)

    try:
        datamodule = hydra.utils.instantiate(cfg.data)
    except Exception as err:  # hydra wraps constructor errors; surface the original message
        raise ConfigError(f"data: {getattr(err, '__cause__', None) or err}") from err
    task = getattr(datamodule, "task", "classification")
    if task == "lm":
        make_causal_for_lm(cfg)
    if task in TASK_VAL_METRICS:
        select_checkpoint_monitor(cfg, task)
        metric = cfg.get("optimized_metric")
        if metric is not None and metric not in TASK_VAL_METRICS[task]:
            raise ConfigError(f"optimized_metric={metric} is not a validation metric of task {task}: choose one of "
                              f"{sorted(TASK_VAL_METRICS[task])} (a sweep must never select on test metrics)")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    try:
        module = LongDocModule(
            model=model_cfg,
            num_classes=datamodule.num_classes,
            vocab_size=datamodule.vocab_size,
            max_seq_len=datamodule.max_seq_len,
            pad_id=datamodule.pad_id,
            optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
            scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
            config=OmegaConf.to_container(cfg, resolve=True),
            task=task,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return datamodule, module


def resolve_wandb_offline(logger_cfg: DictConfig) -> None:
    """``logger.wandb.offline: null`` -> offline unless an API key is configured or WANDB_MODE is set."""
    wb = logger_cfg.get("wandb") if logger_cfg else None
    if wb is None or wb.get("offline") is not None:
        return
    has_key = bool(os.environ.get("WANDB_API_KEY"))
    netrc = os.path.expanduser("~/.netrc")
    if not has_key and os.path.exists(netrc):
        with open(netrc, encoding="utf-8", errors="ignore") as fh:
            has_key = "api.wandb.ai" in fh.read()
    offline = not has_key and not os.environ.get("WANDB_MODE")
    with_flag = OmegaConf.to_container(wb)
    with_flag["offline"] = offline
    logger_cfg["wandb"] = with_flag
    if offline:
        log.info("wandb: no API key found, logging offline; upload later with `wandb sync %s/wandb/offline-run-*`",
                 wb.get("save_dir", "."))
