"""The configuration's schema and cross-field checks, run at composition, before any object or data is built.

* :func:`check_config`: every group's values typed against its schema (dataclasses below, merged with OmegaConf:
  ``trainer.max_epochs=abc`` fails naming the key and the type) and range-checked (``optimizer.lr=0``,
  ``model.dropout=1.5`` fail naming the key, the rule and an example fix), plus the cross-field rules
  (``model.n_heads`` dividing ``model.d_model``, ``optimizer.in_backward`` with clipping, ...).
* :func:`task_of`: the task trained: the root key ``task`` (classification, retrieval, lm, mlm) or, when it is null,
  the data module's own; lm and mlm are self-pretraining objectives that read any data module's batches.
* :func:`apply_task_defaults`: the in-place changes a task needs (causal attention for language modelling, the
  checkpoint monitor), each logged.
* :func:`reconcile_callbacks`: trainer switches that turn a callback off (``trainer.enable_progress_bar=false``)
  drop it from ``callbacks``, logged.

Building objects from the checked config is :func:`longdoc.train.build`'s job.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import inspect
import logging
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from .attention import ATTENTION_REGISTRY
from .checks import ConfigError, check_positive_int
from .lightning.module import DECAYS, fused_adamw_blocks_clipping
from .layers import NORM_POSITIONS
from .models import PRETRAINING_TASKS, SPAN_SAMPLINGS, TASKS, check_masking
from .pretrained import check_pretrained

log = logging.getLogger("longdoc")


#: Checkpoint selection per task when ``callbacks.model_checkpoint`` monitors another task's default:
#: accuracy for the classifiers (as LRA), bits per byte for language modelling, bits per masked token for masked
#: language modelling (the cross-entropy, a proper scoring rule; masked-token accuracy is logged too but moves in
#: coarse steps and ignores how confident the wrong predictions are); micro F1 for multi-label classification,
#: seqeval's entity F1 for token classification and SQuAD's F1 for extractive QA (what Longformer section 6.1 and HF
#: run_ner.py / run_qa.py report).
TASK_MONITOR: dict[str, tuple[str, str]] = {
    "classification": ("val/acc", "max"),
    "retrieval": ("val/acc", "max"),
    "lm": ("val/bpb", "min"),
    "mlm": ("val/bpt", "min"),
    "multilabel": ("val/f1_micro", "max"),
    "token_classification": ("val/f1", "max"),
    "qa": ("val/f1", "max"),
}
#: Whether higher (``max``) or lower (``min``) is better, by the last part of a metric's name.
METRIC_MODES: dict[str, str] = {"acc": "max", "loss": "min", "bpb": "min", "mlm_acc": "max", "mlm_loss": "min",
                                "bpt": "min", "f1_micro": "max", "f1_macro": "max", "f1": "max", "precision": "max",
                                "recall": "max", "token_acc": "max", "exact_match": "max"}
#: Validation metrics each task logs (see ``LongDocModule``) and whether higher is better.
TASK_VAL_METRICS: dict[str, dict[str, str]] = {
    "classification": {"val/acc": "max", "val/loss": "min"},
    "retrieval": {"val/acc": "max", "val/loss": "min"},
    "lm": {"val/bpb": "min", "val/loss": "min"},
    "mlm": {"val/bpt": "min", "val/mlm_loss": "min", "val/mlm_acc": "max"},
    "multilabel": {"val/f1_micro": "max", "val/f1_macro": "max", "val/loss": "min"},
    "token_classification": {"val/f1": "max", "val/precision": "max", "val/recall": "max", "val/token_acc": "max",
                             "val/loss": "min"},
    "qa": {"val/f1": "max", "val/exact_match": "max", "val/loss": "min"},
}


def used_attention_keys(cfg: DictConfig) -> list[str]:
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
    for key in used_attention_keys(cfg):
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


def check_positive(cfg: DictConfig, key: str, hint: str = "") -> None:
    """``cfg.<key>`` is a positive integer, or a list of them (one per layer), or unset.

    Raises:
        ConfigError: otherwise, naming the key (:func:`longdoc.checks.check_positive_int` per value).
    """
    val = OmegaConf.select(cfg, key)
    if val is None:
        return
    values = list(val) if OmegaConf.is_list(val) else [val]  # a list holds one value per layer
    for v in values:
        try:
            check_positive_int(key, v)
        except ValueError as err:
            raise ConfigError(f"{key} must be a positive integer (or a list of them, one per layer), got {val!r}"
                              + (f"; {hint}" if hint else "")) from err


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


def check_optimizer_fused(cfg: DictConfig) -> None:
    """``optimizer.fused=true`` (torch's fused AdamW) unscales mixed-precision gradients inside its own step, so
    Lightning's AMP plugin (``trainer.precision=16-mixed`` / ``bf16-mixed``) cannot clip them before it.

    Raises:
        ConfigError: ``optimizer.fused=true`` with a ``*-mixed`` precision and ``trainer.gradient_clip_val`` set (the
            default ``optimizer.fused=null`` then uses the per-tensor loop by itself).
    """
    if OmegaConf.select(cfg, "optimizer.fused", default=None) is not True:
        return
    trainer = cfg.get("trainer") or OmegaConf.create({})
    precision, clip = str(trainer.get("precision", "32-true")), trainer.get("gradient_clip_val")
    if fused_adamw_blocks_clipping(precision, clip):
        raise ConfigError(f"optimizer.fused=true: torch's fused AdamW unscales {precision} gradients inside its step, so "
                          f"they cannot be clipped before it (trainer.gradient_clip_val={clip}); set "
                          "optimizer.fused=null (the per-tensor loop is then used), trainer.gradient_clip_val=null or "
                          "trainer.precision=32-true")


# ------------------------------------------------------------------------------------------------
# Schema: the types of each group's keys (extra keys pass through: e.g. any Trainer argument)
# ------------------------------------------------------------------------------------------------
@dataclass
class OptimizerSchema:
    """``optimizer``: AdamW (:meth:`longdoc.lightning.LongDocModule.configure_optimizers`)."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    in_backward: bool = False
    fused: Optional[bool] = None
    encoder_lr_ratio: float = 1.0


@dataclass
class SchedulerSchema:
    """``scheduler``: linear warm-up, then cosine, LRA's rsqrt decay, or constant."""

    warmup_ratio: Optional[float] = 0.1
    warmup_steps: Optional[int] = None
    min_lr_ratio: float = 0.1
    decay: str = "cosine"


@dataclass
class ModelSchema:
    """``model``: the encoder and its task head (``conf/model/encoder.yaml``)."""

    d_model: int = 128
    n_heads: int = 4
    depth: int = 2
    d_ff: int = 256
    dropout: float = 0.1
    pooling: str = "cls"
    interaction: str = "nli"
    threshold: float = 0.5
    tie_word_embeddings: bool = True
    chunk_size_feed_forward: int = 0
    reversible: bool = False
    gradient_checkpointing: bool = False
    attention_layers: Optional[list[str]] = None
    norm_position: str = "pre"
    layer_norm_eps: float = 1e-5
    activation_dropout: Optional[float] = None
    type_vocab_size: int = 0
    embedding_layer_norm: bool = False
    pretrained: Any = None
    init_from: Optional[str] = None
    init_extend_positions: bool = False
    freeze_embeddings: bool = False
    compile: bool = False
    attention: Any = None
    attention_options: Any = None
    position: Any = None


@dataclass
class TrainerSchema:
    """``trainer``: the ``pytorch_lightning.Trainer`` arguments longdoc's configs set (others pass unchecked)."""

    max_epochs: Optional[int] = None
    min_epochs: Optional[int] = None
    max_steps: int = -1
    max_time: Any = None
    precision: Any = "32-true"
    gradient_clip_val: Optional[float] = None
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 50
    check_val_every_n_epoch: Optional[int] = 1
    val_check_interval: Any = 1.0
    num_sanity_val_steps: int = 2
    enable_progress_bar: bool = True
    enable_model_summary: Optional[bool] = None
    num_nodes: int = 1
    fast_dev_run: Any = False
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None


@dataclass
class RuntimeSchema:
    """``runtime``: process settings (:mod:`longdoc.runtime`)."""

    cpu_allocator: str = "default"


@dataclass
class MLMSchema:
    """``mlm``: masking for ``task=mlm`` (:func:`longdoc.models.mask_tokens`; BERT's rates by default)."""

    mask_rate: float = 0.15
    mask_token_ratio: float = 0.8
    random_token_ratio: float = 0.1
    span_length: float = 1.0
    span_sampling: str = "geometric"
    seed: int = 0


@dataclass
class RootSchema:
    """Top-level keys of ``train.yaml``."""

    task: Optional[str] = None
    task_name: str = "train"
    seed: int = 42
    ckpt_path: Optional[str] = None
    optimized_metric: Optional[str] = None
    test: bool = True
    stage: Optional[str] = None


SCHEMAS: dict[str, type] = {"optimizer": OptimizerSchema, "scheduler": SchedulerSchema, "model": ModelSchema,
                            "trainer": TrainerSchema, "runtime": RuntimeSchema, "mlm": MLMSchema}
#: Groups whose keys are all in their schema: another key there is a typo (``+model.dpeth=3``), named with the
#: closest known keys. ``trainer`` and ``data`` are checked against their constructors' arguments instead
#: (:func:`check_known_keys`, :func:`check_data_types`).
CLOSED_GROUPS = ("optimizer", "scheduler", "model", "runtime", "mlm")
PRECISIONS = ("64-true", "64", "32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true",
              "transformer-engine", "transformer-engine-float16")


def _in(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    return ok


#: (key, rule it must satisfy, the rule in words, an example fix). Lists (per-layer values) are checked item-wise.
RANGE_RULES: list[tuple[str, Callable[[Any], bool], str, str]] = [
    ("optimizer.lr", lambda v: v > 0, "> 0", "optimizer.lr=1e-3"),
    ("optimizer.weight_decay", lambda v: v >= 0, ">= 0", "optimizer.weight_decay=0.01"),
    ("optimizer.eps", lambda v: v > 0, "> 0", "optimizer.eps=1e-8"),
    ("optimizer.encoder_lr_ratio", lambda v: v > 0, "> 0 (1.0: the encoder learns at optimizer.lr)",
     "optimizer.encoder_lr_ratio=0.1"),
    ("optimizer.betas", lambda v: _in(0, 1, hi_open=True)(v), "in [0, 1) (two values)", "optimizer.betas=[0.9,0.98]"),
    ("scheduler.warmup_ratio", _in(0, 1, hi_open=True), "in [0, 1)", "scheduler.warmup_ratio=0.1"),
    ("scheduler.warmup_steps", lambda v: v >= 0, ">= 0", "scheduler.warmup_steps=1000"),
    ("scheduler.min_lr_ratio", _in(0, 1), "in [0, 1]", "scheduler.min_lr_ratio=0.1"),
    ("model.dropout", _in(0, 1, hi_open=True), "a probability in [0, 1)", "model.dropout=0.1"),
    ("model.chunk_size_feed_forward", lambda v: v >= 0, ">= 0 (0 = no chunking)", "model.chunk_size_feed_forward=1024"),
    ("model.d_ff", lambda v: v > 0, "a positive integer", "model.d_ff=256"),
    ("model.layer_norm_eps", lambda v: v > 0, "> 0", "model.layer_norm_eps=1e-5"),
    ("model.activation_dropout", _in(0, 1, hi_open=True), "a probability in [0, 1) (null = model.dropout)",
     "model.activation_dropout=0.0"),
    ("model.type_vocab_size", lambda v: v >= 0, ">= 0 (0 = no token-type table)", "model.type_vocab_size=0"),
    ("trainer.max_epochs", lambda v: v == -1 or v >= 1, "-1 (no limit) or >= 1", "trainer.max_epochs=10"),
    ("trainer.min_epochs", lambda v: v >= 0, ">= 0", "trainer.min_epochs=null"),
    ("trainer.max_steps", lambda v: v == -1 or v >= 1, "-1 (no limit) or >= 1", "trainer.max_steps=10000"),
    ("trainer.gradient_clip_val", lambda v: v >= 0, ">= 0 (null: no clipping)", "trainer.gradient_clip_val=1.0"),
    ("trainer.accumulate_grad_batches", lambda v: v >= 1, ">= 1", "trainer.accumulate_grad_batches=1"),
    ("trainer.log_every_n_steps", lambda v: v >= 1, ">= 1", "trainer.log_every_n_steps=10"),
    ("trainer.num_sanity_val_steps", lambda v: v >= -1, ">= -1", "trainer.num_sanity_val_steps=2"),
]
#: Attention keys (in ``attention`` and each ``attention_options.<name>``) that are probabilities.
ATTENTION_PROBABILITIES = ("dropout",)


def _schema_error(group: str, err: OmegaConfBaseException) -> ConfigError:
    key = getattr(err, "full_key", None) or ""
    value = getattr(err, "value", None) if hasattr(err, "value") else None
    what = str(err).splitlines()[0]
    return ConfigError(f"{group}.{key}: {what} (got {value!r}); set {group}.{key} to a value of that type, e.g. "
                       f"{group}.{key}={_schema_default(group, key)}")


def _schema_default(group: str, key: str) -> Any:
    full = f"{group}.{key}" if group else key
    for rule_key, _, _, fix in RANGE_RULES:
        if rule_key == full:
            return fix.split("=", 1)[1]
    schema = SCHEMAS.get(group, RootSchema)
    for f in dataclasses.fields(schema):
        if f.name == key.split(".")[0]:
            return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    return "..."


def check_types(cfg: DictConfig) -> None:
    """Type-check each group against its schema (:data:`SCHEMAS`): a value of the wrong type fails, naming the key.

    Raises:
        ConfigError: e.g. ``trainer.max_epochs=abc``.
    """
    for group, schema in (("", RootSchema), *SCHEMAS.items()):  # root first: mlm.seed follows seed
        node = cfg if group == "" else cfg.get(group)
        if node is None:
            continue
        typed = OmegaConf.structured(schema)
        OmegaConf.set_struct(typed, False)  # keys outside the schema pass through
        known = {f.name for f in dataclasses.fields(schema)}
        values = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k in known} \
            if group else {k: OmegaConf.select(cfg, k) for k in known if k in cfg}
        try:
            OmegaConf.merge(typed, values)
        except OmegaConfBaseException as err:
            if not group:
                key = getattr(err, "full_key", "")
                raise ConfigError(f"{key}: {str(err).splitlines()[0]}; e.g. {key}={_schema_default('', key)}") from err
            raise _schema_error(group, err) from err


def _unknown_key(group: str, key: str, known: set[str]) -> ConfigError:
    close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
    hint = ("did you mean " + " or ".join(f"{group}.{c}" for c in close) + "?") if close else \
        f"the {group} keys are {sorted(k for k in known if not k.startswith('_'))}"
    return ConfigError(f"{group}.{key} is not a setting of {group}: {hint} (check the spelling of `+{group}.{key}=...` "
                       "on the command line or in your experiment file)")


def _constructor_arguments(target: Any) -> set[str] | None:
    """The keyword arguments the class ``target`` (a ``_target_`` string) accepts, or None when it takes
    ``**kwargs`` or cannot be imported (then nothing is checked here)."""
    try:
        params = inspect.signature(get_class(str(target)).__init__).parameters
    except Exception:  # noqa: BLE001 -- an unimportable target fails with its own message where it is built
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {n for n, p in params.items() if n != "self" and p.kind is not inspect.Parameter.VAR_POSITIONAL}


def check_known_keys(cfg: DictConfig) -> None:
    """Every key of the closed groups (:data:`CLOSED_GROUPS`) is in its schema, and every ``trainer`` key is an
    argument of ``trainer._target_`` (``pytorch_lightning.Trainer``), so a typo added with ``+`` fails here instead
    of deep inside a constructor (or, for the optimizer, being ignored).

    Raises:
        ConfigError: naming the unknown key and the closest known ones (``+model.dpeth=3`` -> ``model.depth``).
    """
    for group in CLOSED_GROUPS:
        node = cfg.get(group)
        if not OmegaConf.is_dict(node):
            continue
        known = {f.name for f in dataclasses.fields(SCHEMAS[group])}
        for key in node:
            if key not in known:
                raise _unknown_key(group, str(key), known)
    trainer = cfg.get("trainer")
    if OmegaConf.is_dict(trainer) and trainer.get("_target_"):
        known = _constructor_arguments(trainer._target_)
        if known is not None:
            known |= {"_target_"}
            for key in trainer:
                if key not in known:
                    raise _unknown_key("trainer", str(key), known)


def _checkable_type(hint: Any) -> Any:
    """``hint`` (a constructor's annotation) as a type OmegaConf's structured configs check (int, float, bool, str,
    Optional / List of those), else ``Any`` (paths, unions, mappings: left to the constructor)."""
    if hint in (int, float, bool, str):
        return hint
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = _checkable_type(rest[0]) if len(rest) == 1 else Any
        return Optional[inner] if inner is not Any and len(rest) < len(args) else inner
    if origin in (list, tuple, collections.abc.Sequence):
        items = [a for a in args if a is not Ellipsis]
        inner = _checkable_type(items[0]) if items and all(a == items[0] for a in items) else Any
        return typing.List[inner]  # noqa: UP006 -- OmegaConf needs typing.List
    return Any


def _describe_type(t: Any) -> str:
    """``int``, ``a list of str``, ``int or null``, ... for an error message."""
    origin, args = typing.get_origin(t), typing.get_args(t)
    if origin is list:
        return f"a list of {_describe_type(args[0])}" if args and args[0] is not Any else "a list"
    if origin is typing.Union:
        return " or ".join("null" if a is type(None) else _describe_type(a) for a in args)
    return getattr(t, "__name__", str(t))


def check_data_types(cfg: DictConfig) -> None:
    """``data`` keys against the data module's constructor (``data._target_``): each key is one of its arguments
    and each value has the annotated type (ints, floats, bools, strings and lists of them are checked; other
    annotations are left to the constructor's own checks). No data module is built.

    Raises:
        ConfigError: naming the key, the value and its type (``data.batch_size=big``, ``data.exclude_dirs=5``), or an
            unknown key with the closest known ones (``+data.batchsize=8``).
    """
    data = cfg.get("data")
    if not OmegaConf.is_dict(data) or not data.get("_target_"):
        return
    try:
        cls = get_class(str(data._target_))
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 -- an unimportable target is data_task_of's error
        return
    known = _constructor_arguments(data._target_)
    values = {k: v for k, v in OmegaConf.to_container(data, resolve=True).items() if k != "_target_"}
    if known is not None:
        for key in values:
            if key not in known:
                raise _unknown_key("data", str(key), known | {"_target_"})
    fields = [(name, _checkable_type(hints[name])) for name in values if name in hints]
    schema = dataclasses.make_dataclass("DataSchema", fields)
    typed = OmegaConf.structured(schema)
    try:
        OmegaConf.merge(typed, {k: values[k] for k, _ in fields})
    except OmegaConfBaseException as err:
        key = str(getattr(err, "full_key", "") or "")
        value = values.get(key)
        default = inspect.signature(cls.__init__).parameters.get(key)
        example = ""
        if default is not None and default.default not in (inspect.Parameter.empty, None):
            shown = default.default
            shown = "[" + ",".join(map(str, shown)) + "]" if isinstance(shown, (list, tuple)) else repr(shown)
            example = f", e.g. data.{key}={shown}"
        want = _describe_type(dict(fields).get(key, Any))
        raise ConfigError(f"data.{key}={value!r} ({type(value).__name__}) is not a valid value: {data._target_} "
                          f"takes {want}{example}") from err


def check_ranges(cfg: DictConfig) -> None:
    """The value rules of :data:`RANGE_RULES` and the attention probabilities, item-wise for per-layer lists.

    Raises:
        ConfigError: naming the key, the rule and an example fix (e.g. ``optimizer.lr=0``, ``model.dropout=1.5``).
    """
    rules = list(RANGE_RULES)
    for key in used_attention_keys(cfg):
        for name in ATTENTION_PROBABILITIES:
            rules.append((f"{key}.{name}", _in(0, 1, hi_open=True), "a probability in [0, 1)", f"{key}.{name}=0.0"))
    for key, ok, rule, fix in rules:
        val = OmegaConf.select(cfg, key)
        if val is None:
            continue
        values = list(val) if OmegaConf.is_list(val) else [val]
        if key == "optimizer.betas" and len(values) != 2:
            raise ConfigError(f"optimizer.betas must be two values in [0, 1), got {val!r}; e.g. {fix}")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not ok(v) for v in values):
            raise ConfigError(f"{key} must be {rule}, got {val!r}; e.g. {fix}")


def check_config(cfg: DictConfig) -> None:
    """All checks that need no object: types (:func:`check_types`), ranges (:func:`check_ranges`) and the
    cross-field rules. Runs before any data is generated, read or downloaded.

    Raises:
        ConfigError: unknown attention; a value of the wrong type or out of range; ``model.n_heads`` not dividing
            ``model.d_model``; non-positive ``model.d_model`` / ``n_heads`` / ``depth``, ``attention.bucket_size`` /
            ``attention_window`` / ``n_hashes``; ``trainer.precision`` unknown; ``runtime.cpu_allocator`` not tuned /
            default; ``scheduler.decay`` unknown; ``optimizer.in_backward`` with clipping, accumulation, fp16 or DDP
            (:func:`check_optimizer_in_backward`); ``task`` unknown or not runnable on the data (:func:`task_of`);
            invalid ``mlm`` masking settings (:func:`check_mlm`); an unknown key in a closed group or the trainer
            (:func:`check_known_keys`); a ``data`` key or value its data module does not take
            (:func:`check_data_types`); a run that could never validate, or ``limit_val_batches=0`` under a
            sweeper (:func:`check_validation`); several devices without a DDP trainer config
            (:func:`check_processes`).
    """
    task_of(cfg)  # first: optimized_metric's default resolves through it
    name = OmegaConf.select(cfg, "attention.name")
    if name not in ATTENTION_REGISTRY:
        raise ConfigError(f"attention.name={name!r} is unknown: choose one of {sorted(ATTENTION_REGISTRY)} "
                          "(e.g. `python train.py attention=lsh`)")
    for key in ("model.d_model", "model.n_heads", "model.depth"):
        check_positive(cfg, key)
    check_known_keys(cfg)
    check_types(cfg)
    check_data_types(cfg)
    check_ranges(cfg)
    d_model, n_heads = cfg.model.d_model, cfg.model.n_heads
    if d_model % n_heads:
        divisors = [h for h in range(1, min(d_model, 64) + 1) if d_model % h == 0]
        raise ConfigError(f"model.n_heads={n_heads} does not divide model.d_model={d_model}; "
                          f"set model.n_heads to one of {divisors} or change model.d_model")
    check_positive(cfg, "attention.bucket_size", "e.g. attention.bucket_size=64")
    check_positive(cfg, "attention.attention_window", "e.g. attention.attention_window=64")
    check_positive(cfg, "attention.n_hashes", "e.g. attention.n_hashes=2")
    precision = OmegaConf.select(cfg, "trainer.precision")
    if precision is not None and str(precision) not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r} is unknown: choose one of {list(PRECISIONS[:10])} "
                          "(e.g. trainer.precision=bf16-mixed)")
    allocator = OmegaConf.select(cfg, "runtime.cpu_allocator", default="default")
    if allocator not in CPU_ALLOCATORS:
        raise ConfigError(f"runtime.cpu_allocator={allocator!r} is unknown: choose one of {list(CPU_ALLOCATORS)} "
                          "(tuned = glibc reuses freed memory, see longdoc.runtime)")
    decay = OmegaConf.select(cfg, "scheduler.decay", default="cosine")
    if decay not in DECAYS:
        raise ConfigError(f"scheduler.decay={decay!r} is unknown: choose one of {list(DECAYS)} "
                          "(e.g. scheduler.decay=cosine)")
    check_optimizer_in_backward(cfg)
    check_optimizer_fused(cfg)
    check_mlm(cfg)
    check_model_layout(cfg)
    check_validation(cfg)
    check_processes(cfg)
    check_logger_packages(cfg)


def check_logger_packages(cfg: DictConfig) -> None:
    """The packages of the chosen loggers import (MLflow is an extra: ``pip install -e '.[mlflow]'``).

    Raises:
        ConfigError: a ``logger.*`` entry needs a package that is not installed (names the entry and the install).
    """
    import importlib.util

    from .lightning import MLFLOW_INSTALL_HINT

    for name, node in (cfg.get("logger") or {}).items():
        target = str(node.get("_target_", "")) if OmegaConf.is_dict(node) else ""
        if "MLFlow" in target and importlib.util.find_spec("mlflow") is None:
            raise ConfigError(f"logger.{name} ({target}; logger=mlflow, csv_mlflow, many_mlflow) needs the mlflow "
                              "package, which is not installed: "
                              f"`{MLFLOW_INSTALL_HINT}`, or choose another logger (logger=csv, tensorboard, wandb)")


def check_model_layout(cfg: DictConfig) -> None:
    """``model.norm_position`` is pre / post (post not with ``model.reversible``), and ``model.pretrained`` names a
    checkpoint the encoder can represent (:func:`longdoc.pretrained.check_pretrained`: only its config.json is read)
    whose tokenizer the data use (``data.tokenizer_file``, which follows ``model.pretrained.path``).

    Raises:
        ConfigError: naming the key: an unknown ``model.norm_position``, post-norm with ``model.reversible``; a
            ``model.pretrained`` with an unknown key or kind, a path that is not a BERT / RoBERTa / Longformer
            checkpoint (the files found and expected), a config the encoder cannot represent, ``model.reversible`` /
            ``model.attention_layers`` beside it, data without ``tokenizer_file``.
    """
    model = cfg.get("model")
    if model is None:
        return
    norm = model.get("norm_position", "pre")
    if norm not in NORM_POSITIONS:
        raise ConfigError(f"model.norm_position={norm!r} is unknown: choose one of {list(NORM_POSITIONS)} "
                          "(post = BERT / RoBERTa / Longformer's LN(x + f(x)))")
    if norm == "post" and model.get("reversible"):
        raise ConfigError("model.reversible=true needs model.norm_position=pre: the RevNet coupling has no place for "
                          "post-norm's LayerNorm after the residual sum; use model.gradient_checkpointing=true instead")
    if model.get("pretrained") is None:
        return
    container = OmegaConf.to_container(model, resolve=True)
    try:
        info = check_pretrained(container)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if info is None:
        return
    data = cfg.get("data")
    if data is not None and "tokenizer_file" not in data:
        raise ConfigError(f"model.pretrained needs text data tokenized by the checkpoint's tokenizer, but "
                          f"data._target_={data.get('_target_')} has no data.tokenizer_file; use data=stdlib_packages, "
                          "text_classification, lra_text or lra_retrieval")
    if data is not None and OmegaConf.select(cfg, "data.tokenizer_file") is None:
        raise ConfigError(f"model.pretrained ({info.path}) needs the checkpoint's own tokens: set "
                          f"data.tokenizer_file={info.tokenizer_file or '<tokenizer.json>'}"
                          + ("" if info.tokenizer_file else
                             f" ({info.path} has no tokenizer.json: give one saved for this checkpoint)"))


def check_mlm(cfg: DictConfig) -> None:
    """The ``mlm`` masking settings are consistent (:func:`longdoc.models.check_masking`), whatever the task.

    Raises:
        ConfigError: e.g. ``mlm.mask_rate=0``, ratios summing to more than 1, ``mlm.span_sampling`` unknown.
    """
    node = cfg.get("mlm")
    if node is None:
        return
    opts = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "seed"}
    if opts.get("span_sampling", "geometric") not in SPAN_SAMPLINGS:
        raise ConfigError(f"mlm.span_sampling={opts['span_sampling']!r} is unknown: choose one of "
                          f"{list(SPAN_SAMPLINGS)} (e.g. mlm.span_sampling=geometric)")
    try:
        check_masking(**opts)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from err


def data_task_of(cfg: DictConfig) -> str:
    """The task of the data module ``cfg.data`` (its class's ``task`` attribute; no object is built).

    Raises:
        ConfigError: ``data._target_`` cannot be imported.
    """
    target = OmegaConf.select(cfg, "data._target_")
    try:
        return getattr(get_class(str(target)), "task", "classification")
    except Exception as err:
        raise ConfigError(f"data._target_={target!r} cannot be imported ({err}); choose a data group option, "
                          "e.g. `python train.py data=listops`") from err


def check_task_choice(task: Any, data_task: str) -> str:
    """``task`` (the root key; None = ``data_task``) made the task to train.

    Raises:
        ConfigError: ``task`` not one of :data:`longdoc.models.TASKS`; a data module's task (classification,
            retrieval, multilabel, token_classification, qa) on another task's data (only lm and mlm read any data module's batches).
    """
    if task is None:
        return data_task
    if task not in TASKS:
        raise ConfigError(f"task={task!r} is unknown: choose one of {list(TASKS)}, or task=null for the data module's "
                          f"own task ({data_task}); lm and mlm self-pretrain on any data")
    if task != data_task and task not in PRETRAINING_TASKS:
        raise ConfigError(f"task={task} needs {task} data, but this data module's task is {data_task}: use task=null "
                          f"({data_task}) or a self-pretraining objective, task=lm or task=mlm")
    return str(task)


def task_of(cfg: DictConfig) -> str:
    """The task trained: ``cfg.task`` when set (``lm`` / ``mlm`` self-pretrain on any data module's batches), else
    the task of the data module ``cfg.data`` (:func:`data_task_of`; no object is built).

    Raises:
        ConfigError: ``data._target_`` cannot be imported; ``task`` unknown or not runnable on the data
            (:func:`check_task_choice`).
    """
    task = OmegaConf.select(cfg, "task", default=None)
    return check_task_choice(task, data_task_of(cfg))


def apply_task_defaults(cfg: DictConfig, task: str) -> list[str]:
    """The in-place changes a task needs, each logged; returns the keys changed.

    * ``lm``: every attention the model uses becomes causal (:func:`make_causal_for_lm`).
    * ``mlm``: a warning when an attention the model uses is causal (masked LM predicts from both sides).
    * every task: ``callbacks.model_checkpoint`` monitors a metric the task logs (:func:`select_checkpoint_monitor`).

    Raises:
        ConfigError: a checkpoint monitor the task does not log (or the wrong mode); an ``optimized_metric`` that is
            not a validation metric of the task.
    """
    changed = make_causal_for_lm(cfg) if task == "lm" else []
    if task == "mlm":
        for key in used_attention_keys(cfg):
            if OmegaConf.select(cfg, f"{key}.causal", default=False):
                log.warning("task mlm with %s.causal=true: a masked token is predicted from both sides, but this "
                            "attention sees only the left; set %s.causal=false", key, key)
    if task in TASK_VAL_METRICS:
        select_checkpoint_monitor(cfg, task)
        metric = cfg.get("optimized_metric")
        if metric is not None and metric not in TASK_VAL_METRICS[task]:
            raise ConfigError(f"optimized_metric={metric} is not a validation metric of task {task}: choose one of "
                              f"{sorted(TASK_VAL_METRICS[task])} (a sweep must never select on test metrics)")
    return changed


#: Trainer switches that forbid a callback: (trainer key, callbacks entry).
CALLBACK_SWITCHES = (("enable_progress_bar", "progress_bar"), ("enable_model_summary", "model_summary"))


def reconcile_callbacks(cfg: DictConfig) -> list[str]:
    """``trainer.enable_progress_bar=false`` (or ``enable_model_summary=false``) drops the ``callbacks`` entry
    Lightning would refuse beside it (``callbacks.progress_bar`` / ``model_summary``), with a log line; returns
    the entries dropped."""
    dropped = []
    callbacks = cfg.get("callbacks")
    for switch, entry in CALLBACK_SWITCHES:
        if OmegaConf.select(cfg, f"trainer.{switch}") is False and callbacks and callbacks.get(entry) is not None:
            with open_dict(callbacks):
                callbacks[entry] = None
            dropped.append(entry)
            log.info("trainer.%s=false: callbacks.%s dropped too (Lightning refuses the callback without it)",
                     switch, entry)
    return dropped


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


def sweeper_target(cfg: DictConfig | None = None) -> str | None:
    """The ``_target_`` of the Hydra sweeper running this job when it is not Hydra's basic sweeper (e.g. Optuna's,
    ``hparams_search=optuna``), else None. Read from ``HydraConfig`` (``@hydra.main``) or a ``hydra`` node of ``cfg``
    (``compose(return_hydra_config=True)``)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else (cfg.get("hydra") if cfg is not None else None)
    target = str(OmegaConf.select(hydra_cfg, "sweeper._target_", default="") or "") if hydra_cfg is not None else ""
    mode = str(OmegaConf.select(hydra_cfg, "mode", default="") or "") if hydra_cfg is not None else ""
    if not target or target.endswith("BasicSweeper") or "MULTIRUN" not in mode:
        return None
    return target


def validation_disabled(cfg: DictConfig) -> bool:
    """Whether ``trainer.limit_val_batches`` is 0 (Lightning then never validates)."""
    limit = OmegaConf.select(cfg, "trainer.limit_val_batches", default=None)
    return limit is not None and not isinstance(limit, bool) and limit == 0


def check_validation(cfg: DictConfig) -> None:
    """The run validates at least once: Lightning validates at ``trainer.check_val_every_n_epoch`` epochs, and
    :class:`longdoc.lightning.FinalValidation` adds one at the end of a fit that has not validated (a ``max_steps``
    shorter than the validation interval); only an epoch interval longer than ``max_epochs`` escapes both.
    ``trainer.limit_val_batches=0`` (never validate) is allowed for a single run, which then tests its last weights.

    Raises:
        ConfigError: ``trainer.limit_val_batches=0`` under a sweeper (it would get no validation value to optimize;
            names both keys); ``trainer.check_val_every_n_epoch`` larger than ``trainer.max_epochs``.
    """
    sweeper = sweeper_target(cfg)
    if validation_disabled(cfg) and sweeper is not None:
        raise ConfigError(f"trainer.limit_val_batches=0 turns validation off, but the sweeper ({sweeper}, "
                          f"hparams_search) needs each trial's best {cfg.get('optimized_metric')} from validation: drop "
                          "trainer.limit_val_batches=0 (or lower it to a number of batches, e.g. 10), or run without "
                          "hparams_search / -m")
    every = OmegaConf.select(cfg, "trainer.check_val_every_n_epoch", default=None)
    max_epochs = OmegaConf.select(cfg, "trainer.max_epochs", default=None)
    max_steps = OmegaConf.select(cfg, "trainer.max_steps", default=-1)
    if isinstance(every, int) and isinstance(max_epochs, int) and 0 < max_epochs < every and max_steps in (-1, None):
        raise ConfigError(f"trainer.check_val_every_n_epoch={every} > trainer.max_epochs={max_epochs}: the run would "
                          f"never validate, so there would be no best checkpoint; set "
                          f"trainer.check_val_every_n_epoch={max_epochs} (or lower)")


def _process_count(devices: Any) -> int | None:
    """How many processes ``trainer.devices`` asks for (None: all of them, ``-1`` / ``"auto"`` on an accelerator)."""
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str):
        if devices.strip() in ("-1", "auto"):
            return None
        if "," in devices:
            return len([d for d in devices.split(",") if d.strip()])
        return int(devices) if devices.strip().isdigit() else 1
    if isinstance(devices, int):
        return None if devices == -1 else devices
    return 1


def check_processes(cfg: DictConfig) -> None:
    """Several devices need longdoc's DDP settings (``trainer=ddp`` / ``trainer=ddp_cpu``): its length-bucketed batch
    sampler shards by rank itself (``use_distributed_sampler: false``) and reversible layers need DDP's static graph.

    Raises:
        ConfigError: ``trainer.devices`` > 1 (or ``trainer.num_nodes`` > 1) without a DDP strategy config with
            ``use_distributed_sampler: false``, naming ``trainer=ddp_cpu`` / ``trainer=ddp``.
    """
    trainer = cfg.get("trainer")
    if not OmegaConf.is_dict(trainer):
        return
    devices = trainer.get("devices", 1)
    count = _process_count(devices)
    nodes = trainer.get("num_nodes", 1) or 1
    accelerator = str(trainer.get("accelerator", "auto"))
    if (count is not None and count <= 1 and nodes <= 1) or (count is None and accelerator == "cpu" and nodes <= 1):
        return
    strategy = trainer.get("strategy")
    target = str(strategy.get("_target_", "")) if OmegaConf.is_dict(strategy) else str(strategy or "")
    if "DDPStrategy" in target and trainer.get("use_distributed_sampler") is False:
        return
    many = f"{count} processes" if count is not None else "one process per device"
    raise ConfigError(f"trainer.devices={devices} (num_nodes={nodes}) starts {many}, which needs longdoc's DDP "
                      "settings (its batch sampler shards the data by rank itself): use "
                      f"`trainer=ddp_cpu trainer.devices={devices}` on CPU or `trainer=ddp trainer.devices={devices}` "
                      "on GPUs, or trainer.devices=1")


def check_machine(cfg: DictConfig) -> None:
    """The accelerator ``trainer.accelerator`` asks for exists on this machine (run before any data work; not part of
    :func:`check_config`, which checks configurations on any machine).

    Raises:
        ConfigError: ``trainer.accelerator`` gpu / cuda without a CUDA device (names ``trainer=cpu``); mps without one.
    """
    import torch

    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto") or "auto").lower()
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} but this machine has no CUDA GPU "
                          f"(torch {torch.__version__}: torch.cuda.is_available() is False): use trainer=cpu (or "
                          "trainer=ddp_cpu for several CPU processes), or install the CUDA build of torch "
                          "(`make install CONSTRAINTS=`) on a machine with a GPU")
    if accelerator == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("trainer.accelerator=mps but this machine has no Apple MPS device: use trainer=cpu")


#: Keys (or key prefixes) a resumed run may change: how long and where it runs, what it logs to and how it shows
#: progress. Every other key (model, attention, position, data, task, optimizer, scheduler, seed, ...) decides what
#: the checkpoint's weights and the run's metrics mean, and must be the run's own.
RESUME_MUTABLE_KEYS = (
    "ckpt_path", "paths", "hydra", "logger", "callbacks", "test", "runtime", "task_name",
    "trainer.max_steps", "trainer.max_epochs", "trainer.max_time", "trainer.min_steps", "trainer.min_epochs",
    "trainer.precision", "trainer.devices", "trainer.num_nodes", "trainer.accelerator", "trainer.strategy",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
    "trainer.num_sanity_val_steps", "trainer.limit_test_batches", "trainer.default_root_dir",
    "trainer.use_distributed_sampler", "trainer.sync_batchnorm", "trainer.deterministic",
    "trainer.val_check_interval", "trainer.check_val_every_n_epoch",
    "data.num_workers", "data.cache_dir", "model.compile",
)
#: The keys that end training; a resume that raises one of them continues a finished run.
STOP_KEYS = ("trainer.max_steps", "trainer.max_epochs", "trainer.max_time")
_ABSENT = "<absent>"


def flatten_config(d: Any, prefix: str = "") -> dict[str, Any]:
    """A plain nested dict as ``{"dotted.key": leaf value}`` (lists and empty dicts are leaves)."""
    if isinstance(d, dict) and d:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten_config(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def config_differences(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` for every leaf key whose value differs between two resolved configs (plain
    nested dicts; lists compare whole; a key on one side only shows ``"<absent>"`` on the other), sorted by key."""
    a, b = flatten_config(old), flatten_config(new)
    return [(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in sorted(set(a) | set(b))
            if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def _mutable_on_resume(key: str) -> bool:
    return any(key == m or key.startswith(m + ".") for m in RESUME_MUTABLE_KEYS)


def check_resume_config(old: dict, new: dict, source: str, run_dir: str) -> list[tuple[str, Any, Any]]:
    """Compare the config a run was trained with (``old``: the checkpoint's ``hyper_parameters.config`` or the run
    directory's ``config.yaml``) with the one composed now (``new``), before anything in the run directory changes.
    Keys of :data:`RESUME_MUTABLE_KEYS` may differ (logged), and so may keys only one side has (a setting another
    longdoc version added or removed; logged); any other difference is refused.

    Returns:
        the differences that are allowed (logged, one line each).

    Raises:
        ConfigError: listing every other key with its old and new value and the two ways out (the run's settings,
            or a new run directory).
    """
    diffs = config_differences(old, new)
    # a key only one side has comes from another longdoc version (a setting added or removed since the run started):
    # logged, not refused; a value that changed is refused unless the key may change on a resume
    refused = [d for d in diffs if not _mutable_on_resume(d[0]) and _ABSENT not in (d[1], d[2])]
    if refused:
        # model.attention / model.attention_options / model.position copy the top-level groups: show those once
        top = {(k, o, n) for k, o, n in refused if not k.startswith("model.")}
        refused = [(k, o, n) for k, o, n in refused
                   if not (k.startswith(("model.attention", "model.position")) and (k[6:], o, n) in top)]

        def show(v: Any) -> str:
            return v if v == _ABSENT else repr(v)

        shown = "\n".join(f"  {k}: {show(o)} (the run) -> {show(n)} (now)" for k, o, n in refused[:30])
        more = f"\n  ... and {len(refused) - 30} more" if len(refused) > 30 else ""
        raise ConfigError(f"{run_dir} was trained with other settings ({source}); resuming it with these would mix "
                          f"two configurations in one run:\n{shown}{more}\nEither rerun with the run's own settings "
                          f"(they are in {run_dir}/config.yaml), or start a new run directory (leave out "
                          "hydra.run.dir=..., or pass ckpt_path=null with a new hydra.run.dir)")
    allowed = [d for d in diffs if not d[0].startswith(("hydra.", "paths.", "ckpt_path"))]
    for k, o, n in allowed:
        log.info("resuming %s with %s changed: %r -> %r", run_dir, k, o, n)
    return diffs


def extends_training(diffs: list[tuple[str, Any, Any]]) -> bool:
    """Whether config differences (:func:`config_differences`) raise a limit that ended training (``max_steps``,
    ``max_epochs``, ``max_time``; -1 / null is no limit), so a finished run has more to train."""
    def unlimited(v: Any) -> bool:
        return v is None or v == -1

    for key, old, new in diffs:
        if key not in STOP_KEYS or old == _ABSENT:
            continue
        if unlimited(new) and not unlimited(old):
            return True
        if key == "trainer.max_time":
            if not unlimited(old) and not unlimited(new) and _seconds(new) > _seconds(old):
                return True
        elif not unlimited(old) and not unlimited(new) and new > old:
            return True
    return False


def _seconds(max_time: Any) -> float:
    """``trainer.max_time`` (``"DD:HH:MM:SS"`` or a mapping of timedelta arguments) in seconds."""
    import datetime

    if isinstance(max_time, dict):
        return datetime.timedelta(**max_time).total_seconds()
    parts = [float(p) for p in str(max_time).split(":")]
    return sum(p * m for p, m in zip(reversed(parts), (1, 60, 3600, 86400)))
