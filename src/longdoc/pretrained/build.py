"""The config entry point: ``model=pretrained model.pretrained.path=<dir>``
``model.pretrained.kind=longformer|bert|roberta``.

``model.pretrained`` (``conf/model/pretrained.yaml``):

* ``path``: a HF checkpoint directory (:func:`~longdoc.pretrained.inspect_checkpoint`).
* ``kind``: ``longformer`` (:func:`~longdoc.pretrained.load_longformer`), ``bert`` or ``roberta``
  (:func:`~longdoc.pretrained.make_long`); null = config.json's ``model_type``.
* ``max_positions``: tokens the position table covers; null = the checkpoint's own (Longformer) or 4096 (make-long).
* ``attention_window``: one-sided window, an int or one per layer; null = the checkpoint's ``attention_window / 2``
  (Longformer) or 256 (make-long: allenai's 512 two-sided).

The checkpoint's ``config.json`` decides the architecture (:func:`~longdoc.pretrained.encoder_config`):
``model.d_model``, ``n_heads``, ``depth``, ``d_ff``, ``dropout``, ``activation_dropout``, ``norm_position``,
``layer_norm_eps``, ``type_vocab_size``, ``embedding_layer_norm``, the ``position`` settings, the attention window /
dropout / global projections, and the vocabulary and pad id; the rest of ``model`` (pooling, chunked feed-forward,
gradient checkpointing, ``attention.backend``, the task head) applies as usual. The tokens come from the checkpoint's
own ``tokenizer.json`` (``data.tokenizer_file``, which follows ``model.pretrained.path``). The weights are copied by
:func:`init_from_pretrained` after the model is built (never by the model's constructor, so a longdoc checkpoint of
the fine-tuned model rebuilds without the HF directory).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from torch import nn

from .checkpoint import MODEL_TYPES, CheckpointError, CheckpointInfo, inspect_checkpoint
from .convert import PretrainedReport, encoder_config, load_pretrained_weights

log = logging.getLogger("longdoc")

#: Keys of ``model.pretrained``.
PRETRAINED_KEYS: tuple[str, ...] = ("path", "kind", "max_positions", "attention_window")
#: ``model.*`` keys the checkpoint decides (the Encoder arguments of :func:`~longdoc.pretrained.encoder_config`).
ARCHITECTURE_KEYS: tuple[str, ...] = ("d_model", "n_heads", "depth", "d_ff", "dropout", "activation_dropout",
                                      "norm_position", "layer_norm_eps", "type_vocab_size", "embedding_layer_norm",
                                      "attention", "position")


def pretrained_spec(model: Mapping[str, Any]) -> dict[str, Any] | None:
    """``model.pretrained`` as a dict, or None when it is absent or null.

    Raises:
        ValueError: unknown keys, a ``kind`` that is not longformer / bert / roberta, no ``path`` (names the key).
    """
    spec = model.get("pretrained")
    if spec is None:
        return None
    spec = dict(spec)
    unknown = sorted(set(spec) - set(PRETRAINED_KEYS))
    if unknown:
        raise ValueError(f"model.pretrained has unknown keys {unknown}: the keys are {list(PRETRAINED_KEYS)}")
    kind = spec.get("kind")
    if kind is not None and kind not in MODEL_TYPES:
        raise ValueError(f"model.pretrained.kind={kind!r} is unknown: choose one of {list(MODEL_TYPES)} (or null for "
                         "config.json's model_type)")
    if not spec.get("path"):
        raise ValueError("model.pretrained needs model.pretrained.path=<HF checkpoint directory> (config.json + "
                         "model.safetensors or pytorch_model.bin), e.g. `python train.py model=pretrained "
                         "model.pretrained.path=<dir>`; or model.pretrained=null for longdoc's own model")
    return spec


def check_pretrained(model: Mapping[str, Any]) -> CheckpointInfo | None:
    """Check ``model.pretrained`` against its checkpoint without reading any tensor: the directory, its kind and
    whether the encoder can represent its config, and the ``model`` keys that cannot go with it.

    Returns:
        the checkpoint, or None when ``model.pretrained`` is null.

    Raises:
        ValueError: the errors of :func:`pretrained_spec`, :func:`~longdoc.pretrained.inspect_checkpoint` and
            :func:`~longdoc.pretrained.encoder_config` (prefixed with the key ``model.pretrained.path``);
            ``model.attention_layers`` or ``model.reversible`` set (post-norm weights).
    """
    spec = pretrained_spec(model)
    if spec is None:
        return None
    try:
        info = inspect_checkpoint(spec["path"], spec.get("kind"))
    except CheckpointError as err:
        raise ValueError(f"model.pretrained.path: {err}") from err
    if model.get("attention_layers"):
        raise ValueError(f"model.attention_layers={list(model['attention_layers'])} cannot go with model.pretrained: "
                         "every layer of the checkpoint is a local_global (or full) layer; set "
                         "model.attention_layers=null")
    if model.get("reversible"):
        raise ValueError("model.reversible=true cannot go with model.pretrained: its weights are post-norm, which the "
                         "RevNet coupling cannot represent; use model.gradient_checkpointing=true to save memory")
    try:
        encoder_config(info, max_positions=spec.get("max_positions"), attention_window=_window(spec),
                       attention=model.get("attention"))
    except CheckpointError as err:
        raise ValueError(f"model.pretrained.path: {err}") from err
    return info


def _window(spec: Mapping[str, Any]) -> Any:
    window = spec.get("attention_window")
    return list(window) if isinstance(window, (list, tuple)) else window


def pretrained_model_config(model: Mapping[str, Any], max_seq_len: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``model`` config with the checkpoint's architecture, and the data-side sizes it fixes.

    Args:
        model: the ``model`` config (with ``pretrained.path``). max_seq_len: the data's longest sequence.

    Returns:
        ``(model, sizes)``: ``model`` with :data:`ARCHITECTURE_KEYS` replaced (each key whose value changes is
        logged); ``sizes`` = ``{"vocab_size", "pad_id"}`` of the checkpoint, for the task model.

    Raises:
        ValueError: see :func:`check_pretrained`; ``max_seq_len`` above the positions the encoder covers (names
            ``data.max_length`` and ``model.pretrained.max_positions``).
    """
    info = check_pretrained(model)
    if info is None:
        raise ValueError("pretrained_model_config needs model.pretrained.path")
    spec = pretrained_spec(model)
    kwargs = encoder_config(info, max_positions=spec.get("max_positions"), attention_window=_window(spec),
                            attention=model.get("attention"))
    if max_seq_len > kwargs["max_seq_len"]:
        raise ValueError(f"the data's longest sequence has {max_seq_len} tokens but the {info.kind} encoder covers "
                         f"{kwargs['max_seq_len']} positions: lower data.max_length or raise "
                         f"model.pretrained.max_positions (positions are tiled block-wise)")
    out = dict(model)
    changed = []
    for key in ARCHITECTURE_KEYS:
        if out.get(key) != kwargs[key]:
            changed.append(f"{key}={kwargs[key]!r}" if key not in ("attention", "position") else key)
        out[key] = kwargs[key]
    log.info("model.pretrained=%s (%s): from its config.json: %s", info.path, info.kind, ", ".join(changed) or "nothing")
    return out, {"vocab_size": kwargs["vocab_size"], "pad_id": kwargs["pad_id"]}


def init_from_pretrained(encoder: nn.Module, model: Mapping[str, Any]) -> PretrainedReport:
    """Copy the checkpoint of ``model.pretrained`` into ``encoder`` (built from :func:`pretrained_model_config`).

    Raises:
        ValueError: see :func:`check_pretrained`; missing / unexpected tensors or other shapes (the message names
            them; :func:`~longdoc.pretrained.load_pretrained_weights`).
    """
    info = check_pretrained(model)
    if info is None:
        raise ValueError("init_from_pretrained needs model.pretrained.path")
    try:
        return load_pretrained_weights(encoder, info)
    except CheckpointError as err:
        raise ValueError(f"model.pretrained.path: {err}") from err
