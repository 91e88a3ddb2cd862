"""HuggingFace BERT / RoBERTa / Longformer weights <-> a longdoc :class:`~longdoc.models.Encoder`.

The encoder these checkpoints become (:func:`encoder_config`): learned absolute positions (RoBERTa / Longformer with
their padding offset, ``position.padding_idx = pad_token_id``), the token-type table, the embedding LayerNorm,
post-norm blocks (``model.norm_position=post``) with HF's ``layer_norm_eps``, a GELU feed-forward without dropout
after the activation, and local_global attention with separate global projections (Beltagy et al. 2020,
"Longformer", section 3.1; HF's ``query_global`` / ``key_global`` / ``value_global``).

Window widths: HF's ``attention_window`` is the two-sided width (a token sees ``attention_window / 2`` neighbours on
each side); longdoc's ``attention.attention_window`` is one-sided. So HF ``attention_window=512`` (longformer-base)
is longdoc ``attention_window=256``, and :func:`save_longformer` writes ``2 * attention_window``.

Making a short model long (:func:`make_long`) follows allenai's ``convert_model_to_long`` recipe (Beltagy et al.
2020, section 5): the learned positions are copied block-wise up to ``max_positions`` (RoBERTa keeps its two
padding-offset rows in front), self-attention becomes sliding-window attention, and the global projections start as
copies of the local ones. With a window that covers the whole input and at most the original number of positions,
the made-long encoder computes exactly the original model (tested against transformers to 1e-5).

Tensor names (HF ``BertModel`` / ``RobertaModel`` / ``LongformerModel`` ``state_dict``, optionally under the
``bert.`` / ``roberta.`` / ``longformer.`` prefix of the ``*ForMaskedLM`` classes):

==============================================================  =====================================================
HF                                                              longdoc encoder
==============================================================  =====================================================
``embeddings.word_embeddings``                                  ``token_embedding``
``embeddings.position_embeddings``                              ``position.weight`` (tiled by make_long)
``embeddings.token_type_embeddings``                            ``token_type_embedding``
``embeddings.LayerNorm``                                        ``embedding_norm``
``encoder.layer.<i>.attention.self.{query,key,value}``          ``blocks.<i>.attention.in_proj`` (rows q, k, v)
``encoder.layer.<i>.attention.self.{query,key,value}_global``   ``blocks.<i>.attention.in_proj_global``
``encoder.layer.<i>.attention.output.dense`` / ``.LayerNorm``   ``blocks.<i>.attention.out_proj`` / ``norm_attn``
``encoder.layer.<i>.intermediate.dense``                        the feed-forward's first Linear
``encoder.layer.<i>.output.dense`` / ``.LayerNorm``             its second Linear / ``blocks.<i>.norm_ff``
==============================================================  =====================================================

``pooler.*`` and the masked-LM heads (``lm_head.*``, ``cls.*``) are not part of the encoder and are reported as
unused; any other tensor the mapping does not know is an error, and so is a tensor the encoder needs and the
checkpoint lacks.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attention import FullAttention, LocalGlobalAttention
from ..embeddings import LearnedPositionalEmbedding
from ..models import Encoder
from ..models.init_from import tile_rows
from .checkpoint import CheckpointError, CheckpointInfo, inspect_checkpoint, load_state_dict

log = logging.getLogger("longdoc")

#: Prefix of the base model inside HF's task classes (``LongformerForMaskedLM.longformer``, ...).
BASE_PREFIXES: dict[str, str] = {"longformer": "longformer.", "bert": "bert.", "roberta": "roberta."}
#: HF tensors that are not part of the encoder (task heads, buffers): reported as unused, never an error.
UNUSED_PREFIXES: tuple[str, ...] = ("pooler.", "lm_head.", "cls.", "embeddings.position_ids",
                                    "embeddings.token_type_ids")
#: HF ``hidden_act`` values the encoder's feed-forward computes (``nn.GELU()``, the exact erf form).
SUPPORTED_ACTIVATIONS: tuple[str, ...] = ("gelu",)
#: Files copied beside the weights by ``save_longformer(..., tokenizer_dir=...)``.
TOKENIZER_FILES: tuple[str, ...] = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                    "vocab.txt", "vocab.json", "merges.txt")
#: One-sided window :func:`make_long` uses by default: allenai's recipe's ``attention_window=512`` (two-sided).
DEFAULT_MAKE_LONG_WINDOW = 256


@dataclass
class PretrainedReport:
    """What :func:`load_pretrained_weights` did.

    Attributes:
        source: the checkpoint directory. kind: 'longformer' | 'bert' | 'roberta'. loaded: encoder tensors filled.
        extended: ``(rows in the checkpoint, rows in the encoder)`` of the position table when it was tiled or cut.
        global_from_local: encoder tensors of the global projections initialised from the local ones (make-long).
        extra_token_rows: token-embedding rows the encoder has beyond the checkpoint's (left at initialisation).
        unused: checkpoint tensors outside the encoder (pooler, masked-LM head).
    """

    source: str
    kind: str
    loaded: list[str] = field(default_factory=list)
    extended: tuple[int, int] | None = None
    global_from_local: list[str] = field(default_factory=list)
    extra_token_rows: int = 0
    unused: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# config.json -> Encoder arguments
# ------------------------------------------------------------------------------------------------
def _positive_int(config: Mapping, key: str, where: str) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CheckpointError(f"{where}: {key}={value!r} must be a positive integer")
    return value


def _check_representable(config: Mapping, where: str) -> None:
    act = config.get("hidden_act", "gelu")
    if act not in SUPPORTED_ACTIVATIONS:
        raise CheckpointError(f"{where}: hidden_act={act!r} cannot be represented: the longdoc feed-forward is "
                              f"GELU (exact erf form, HF hidden_act='gelu'); supported: {list(SUPPORTED_ACTIVATIONS)}")
    pos = config.get("position_embedding_type", "absolute")
    if pos not in (None, "absolute"):
        raise CheckpointError(f"{where}: position_embedding_type={pos!r} cannot be represented: longdoc reads "
                              "learned absolute positions only ('absolute', HF's default)")
    for key in ("is_decoder", "add_cross_attention"):
        if config.get(key):
            raise CheckpointError(f"{where}: {key}=true cannot be represented: longdoc imports bidirectional "
                                  "encoders without cross-attention")
    d, h = _positive_int(config, "hidden_size", where), _positive_int(config, "num_attention_heads", where)
    if d % h:
        raise CheckpointError(f"{where}: num_attention_heads={h} does not divide hidden_size={d}")


def hf_attention_windows(config: Mapping, where: str = "config.json") -> list[int]:
    """The per-layer one-sided windows of a Longformer ``config.json``: ``attention_window / 2`` per layer.

    HF ``attention_window`` (an int or one per layer) is the two-sided width and must be even (HF's own rule).

    Raises:
        CheckpointError: a list of the wrong length, an odd / non-positive width, a dilation other than 1 or an
            attention mode other than sliding windows (allenai's original configs), which the encoder cannot
            represent.
    """
    depth = _positive_int(config, "num_hidden_layers", where)
    windows = config.get("attention_window", 512)
    windows = list(windows) if isinstance(windows, (list, tuple)) else [windows] * depth
    if len(windows) != depth:
        raise CheckpointError(f"{where}: attention_window has {len(windows)} entries but num_hidden_layers={depth}")
    for w in windows:
        if isinstance(w, bool) or not isinstance(w, int) or w <= 0 or w % 2:
            raise CheckpointError(f"{where}: attention_window={config.get('attention_window')!r} must be positive "
                                  "even integers (HF's two-sided width)")
    dilation = config.get("attention_dilation")
    if dilation is not None and any(x != 1 for x in (dilation if isinstance(dilation, list) else [dilation])):
        raise CheckpointError(f"{where}: attention_dilation={dilation!r}: longdoc reads undilated Longformer "
                              "checkpoints (HF's LongformerModel has no dilation either)")
    mode = config.get("attention_mode")
    if mode not in (None, "longformer", "sliding_chunks", "tvm"):
        raise CheckpointError(f"{where}: attention_mode={mode!r} cannot be represented (sliding-window attention: "
                              "'longformer', 'sliding_chunks' or 'tvm')")
    return [w // 2 for w in windows]


def _per_layer(value: int | Sequence[int], depth: int, key: str) -> list[int]:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * depth
    if len(values) != depth:
        raise ValueError(f"{key} has {len(values)} entries but the checkpoint has {depth} layers")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{key} must be positive integers (one-sided windows), got {value!r}")
    return values


def encoder_config(info: CheckpointInfo, *, max_positions: int | None = None,
                   attention_window: int | Sequence[int] | None = None,
                   attention: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The :class:`~longdoc.models.Encoder` arguments that represent a checkpoint (made long for BERT / RoBERTa).

    Args:
        info: from :func:`~longdoc.pretrained.inspect_checkpoint`.
        max_positions: tokens the position table covers (the ``padding_idx + 1`` offset rows of RoBERTa /
            Longformer come on top). None: the checkpoint's own (Longformer) or 4096 (BERT / RoBERTa). More than
            the checkpoint has: its table is tiled block-wise; fewer: cut.
        attention_window: one-sided window (an int, or one per layer). None: the checkpoint's ``attention_window
            / 2`` (Longformer) or :data:`DEFAULT_MAKE_LONG_WINDOW` (256, allenai's 512 two-sided; BERT / RoBERTa).
        attention: attention settings to start from, e.g. ``{"name": "local_global", "backend": "auto"}``
            (default local_global). ``name`` 'local_global' (separate global projections, as Longformer) or
            'full' (BERT / RoBERTa only: the plain model at up to ``max_positions`` tokens). The checkpoint sets
            ``attention_window``, ``dropout`` (``attention_probs_dropout_prob``), ``separate_global_projections``
            (true), ``causal`` (false) and ``attention_dilation`` (1).

    Returns:
        a dict of Encoder keyword arguments (``vocab_size``, ``pad_id``, ``d_model``, ..., ``max_seq_len`` =
        ``max_positions``): ``Encoder(**encoder_config(info))``.

    Raises:
        CheckpointError: a config the encoder cannot represent (activation, position type, decoder, window
            widths, dilation; see :func:`hf_attention_windows`), naming the key.
        ValueError: an attention name other than local_global / full (full with a Longformer checkpoint), a
            bad ``attention_window`` / ``max_positions``.
    """
    cfg, where = info.config, str(info.path / "config.json")
    _check_representable(cfg, where)
    depth = _positive_int(cfg, "num_hidden_layers", where)
    rows = _positive_int(cfg, "max_position_embeddings", where)
    pad_id = cfg.get("pad_token_id", 0 if info.kind == "bert" else 1)
    if isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0:
        raise CheckpointError(f"{where}: pad_token_id={pad_id!r} must be an integer >= 0")
    padding_idx = None if info.kind == "bert" else pad_id
    offset = 0 if padding_idx is None else padding_idx + 1
    if rows <= offset:
        raise CheckpointError(f"{where}: max_position_embeddings={rows} leaves no position after the padding "
                              f"offset pad_token_id + 1 = {offset}")
    if max_positions is None:
        max_positions = rows - offset if info.kind == "longformer" else 4096
    if isinstance(max_positions, bool) or not isinstance(max_positions, int) or max_positions <= 0:
        raise ValueError(f"model.pretrained.max_positions must be a positive integer, got {max_positions!r}")
    att = dict(attention or {"name": "local_global"})
    name = att.get("name", "local_global")
    if name not in ("local_global", "full") or (name == "full" and info.kind == "longformer"):
        raise ValueError(f"attention.name={name!r} cannot run a {info.kind} checkpoint: use local_global"
                         + (" (or full for BERT / RoBERTa)" if info.kind != "longformer" else ""))
    att["name"] = name
    att["dropout"] = float(cfg.get("attention_probs_dropout_prob", 0.1))
    if name == "local_global":
        if attention_window is None:
            attention_window = (hf_attention_windows(cfg, where) if info.kind == "longformer"
                                else DEFAULT_MAKE_LONG_WINDOW)
        windows = _per_layer(attention_window, depth, "model.pretrained.attention_window")
        att.update(attention_window=windows if len(set(windows)) > 1 else windows[0], causal=False,
                   attention_dilation=1, separate_global_projections=True)
    return {
        "vocab_size": _positive_int(cfg, "vocab_size", where),
        "pad_id": pad_id,
        "d_model": _positive_int(cfg, "hidden_size", where),
        "n_heads": _positive_int(cfg, "num_attention_heads", where),
        "depth": depth,
        "d_ff": _positive_int(cfg, "intermediate_size", where),
        "dropout": float(cfg.get("hidden_dropout_prob", 0.1)),
        "activation_dropout": 0.0,
        "attention": att,
        "position": {"name": "learned", "max_positions": max_positions + offset, "padding_idx": padding_idx},
        "max_seq_len": max_positions,
        "norm_position": "post",
        "layer_norm_eps": float(cfg.get("layer_norm_eps", 1e-12)),
        "type_vocab_size": int(cfg.get("type_vocab_size", 2)),
        "embedding_layer_norm": True,
    }


# ------------------------------------------------------------------------------------------------
# tensor names: one table used both ways
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorLink:
    """One encoder tensor and the HF tensors it is made of (concatenated along dim 0, in order)."""

    ours: str
    hf: tuple[str, ...]
    optional: bool = False  # the HF tensors may be absent (global projections of BERT / RoBERTa)


def _module_names(encoder: nn.Module) -> dict[int, str]:
    return {id(m): n for n, m in encoder.named_modules()}


def _linear_links(names: dict[int, str], module: nn.Module | None, hf: Sequence[str], *,
                  optional: bool = False) -> list[TensorLink]:
    if module is None:
        return []
    out = [TensorLink(f"{names[id(module)]}.weight", tuple(f"{h}.weight" for h in hf), optional)]
    if getattr(module, "bias", None) is not None:
        out.append(TensorLink(f"{names[id(module)]}.bias", tuple(f"{h}.bias" for h in hf), optional))
    return out


def _feed_forward_linears(block: nn.Module, i: int) -> tuple[nn.Linear, nn.Linear]:
    linears = [m for m in block.feed_forward.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 2:
        raise CheckpointError(f"block {i}: the feed-forward has {len(linears)} Linear layers; HF's has two "
                              "(intermediate.dense, output.dense)")
    return linears[0], linears[1]


def tensor_links(encoder: Encoder) -> list[TensorLink]:
    """The HF name(s) of every tensor of ``encoder`` (the table of the module docstring), without a prefix.

    Raises:
        CheckpointError: an encoder part HF's BERT / Longformer layout has no place for (a final LayerNorm of a
            pre-norm encoder, LSH attention, a feed-forward that is not two Linear layers).
    """
    names = _module_names(encoder)
    links = [TensorLink("token_embedding.weight", ("embeddings.word_embeddings.weight",))]
    if isinstance(encoder.position, LearnedPositionalEmbedding):
        links.append(TensorLink("position.weight", ("embeddings.position_embeddings.weight",)))
    if encoder.token_type_embedding is not None:
        links.append(TensorLink("token_type_embedding.weight", ("embeddings.token_type_embeddings.weight",)))
    links += _linear_links(names, encoder.embedding_norm, ["embeddings.LayerNorm"])
    for i, block in enumerate(encoder.blocks):
        pre, att = f"encoder.layer.{i}.", block.attention
        if not isinstance(att, (LocalGlobalAttention, FullAttention)):
            raise CheckpointError(f"block {i} has {type(att).__name__}: HF BERT / RoBERTa / Longformer layers hold "
                                  "query / key / value projections, which longdoc's full and local_global attention "
                                  "have (LSH shares queries and keys)")
        links += _linear_links(names, att.in_proj, [f"{pre}attention.self.{p}" for p in ("query", "key", "value")])
        links += _linear_links(names, getattr(att, "in_proj_global", None),
                               [f"{pre}attention.self.{p}_global" for p in ("query", "key", "value")], optional=True)
        links += _linear_links(names, att.out_proj, [f"{pre}attention.output.dense"])
        links += _linear_links(names, block.norm_attn, [f"{pre}attention.output.LayerNorm"])
        first, second = _feed_forward_linears(block, i)
        links += _linear_links(names, first, [f"{pre}intermediate.dense"])
        links += _linear_links(names, second, [f"{pre}output.dense"])
        links += _linear_links(names, block.norm_ff, [f"{pre}output.LayerNorm"])
    covered = {link.ours for link in links}
    extra = [k for k in encoder.state_dict() if k not in covered]
    if extra:
        raise CheckpointError(f"the encoder has tensors with no place in HF's BERT / Longformer layout: {extra[:6]}; "
                              "it needs model.norm_position=post (no final LayerNorm), learned positions and "
                              "full / local_global attention")
    return links


def _normalise_keys(state: Mapping[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """Strip the task class's base prefix (``longformer.``, ...) and rename TF-era ``gamma`` / ``beta``."""
    prefix = BASE_PREFIXES[kind]
    has_prefix = any(k.startswith(prefix + "embeddings.") for k in state)
    out = {}
    for k, v in state.items():
        if has_prefix and k.startswith(prefix):
            k = k[len(prefix):]
        if k.endswith(".gamma"):
            k = k[: -len("gamma")] + "weight"
        elif k.endswith(".beta"):
            k = k[: -len("beta")] + "bias"
        out[k] = v
    return out


def extend_positions(table: torch.Tensor, padding_idx: int | None, rows: int) -> torch.Tensor:
    """A position table (R, D) tiled block-wise (or cut) to (rows, D), keeping RoBERTa's ``padding_idx + 1`` offset
    rows in front (allenai ``convert_model_to_long``; Beltagy et al. 2020 section 5: "we copy the 512 position
    embeddings from RoBERTa multiple times")."""
    offset = 0 if padding_idx is None else padding_idx + 1
    return torch.cat([table[:offset], tile_rows(table[offset:], rows - offset)], dim=0)


# ------------------------------------------------------------------------------------------------
# HF -> longdoc
# ------------------------------------------------------------------------------------------------
def load_pretrained_weights(encoder: Encoder, info: CheckpointInfo,
                            state: Mapping[str, torch.Tensor] | None = None) -> PretrainedReport:
    """Fill ``encoder`` (built from :func:`encoder_config` of the same checkpoint) with the checkpoint's tensors, in
    place under ``torch.no_grad``, cast to the encoder's dtypes.

    A position table of another length is tiled / cut (:func:`extend_positions`); missing global projections
    (BERT / RoBERTa) are copied from the local ones; a token embedding with more rows than the checkpoint's (ids a
    longdoc task appended, e.g. the masked-LM ``[MASK]`` id) keeps its extra rows.

    Args:
        encoder: the target. info: the checkpoint. state: its tensors (default: :func:`load_state_dict`).

    Returns:
        :class:`PretrainedReport`, also logged.

    Raises:
        CheckpointError: tensors the encoder needs that the checkpoint lacks, tensors the mapping does not know
            (not a BERT / RoBERTa / Longformer state_dict), or shapes that differ (each message names the tensors
            and the shapes).
    """
    state = _normalise_keys(load_state_dict(info) if state is None else state, info.kind)
    report = PretrainedReport(str(info.path), info.kind)
    links = tensor_links(encoder)
    own = encoder.state_dict()
    missing = [h for link in links if not link.optional for h in link.hf if h not in state]
    if missing:
        raise CheckpointError(f"{info.path}: the checkpoint lacks {len(missing)} tensors the encoder needs, e.g. "
                              f"{missing[:5]} (keys found look like {sorted(state)[:3]}); is it a {info.kind} "
                              "model saved with save_pretrained?")
    used = {h for link in links for h in link.hf}
    unexpected = sorted(k for k in state if k not in used and not k.startswith(UNUSED_PREFIXES))
    if unexpected:
        raise CheckpointError(f"{info.path}: {len(unexpected)} tensors have no place in the longdoc encoder, e.g. "
                              f"{unexpected[:5]}; longdoc reads {info.kind} encoders (and their masked-LM / pooler "
                              f"heads, left unused), with the architecture of config.json")
    report.unused = sorted(k for k in state if k not in used)
    padding_idx = getattr(encoder.position, "padding_idx", None)
    with torch.no_grad():
        done: dict[str, torch.Tensor] = {}
        for link in links:
            target = own[link.ours]
            if link.optional and not all(h in state for h in link.hf):
                local = link.ours.replace("in_proj_global", "in_proj")
                value = done[local]
                report.global_from_local.append(link.ours)
            else:
                value = torch.cat([state[h] for h in link.hf], dim=0) if len(link.hf) > 1 else state[link.hf[0]]
            if link.ours == "position.weight" and value.shape[0] != target.shape[0] \
                    and value.shape[1:] == target.shape[1:]:
                report.extended = (value.shape[0], target.shape[0])
                value = extend_positions(value, padding_idx, target.shape[0])
            if link.ours == "token_embedding.weight" and value.shape[0] < target.shape[0] \
                    and value.shape[1:] == target.shape[1:]:
                report.extra_token_rows = target.shape[0] - value.shape[0]
                target[: value.shape[0]].copy_(value.to(target.dtype))
                done[link.ours] = value
                report.loaded.append(link.ours)
                continue
            if value.shape != target.shape:
                raise CheckpointError(f"{info.path}: {' + '.join(link.hf)} is {tuple(value.shape)} but the encoder's "
                                      f"{link.ours} is {tuple(target.shape)}; build the encoder from this checkpoint's "
                                      "config.json (longdoc.pretrained.encoder_config)")
            target.copy_(value.to(target.dtype))
            done[link.ours] = value
            report.loaded.append(link.ours)
    log.info("pretrained %s %s: loaded %d encoder tensors%s%s%s; unused: %s", info.kind, info.path, len(report.loaded),
             f", positions tiled {report.extended[0]} -> {report.extended[1]} rows" if report.extended else "",
             f", {len(report.global_from_local)} global projections copied from the local ones"
             if report.global_from_local else "",
             f", {report.extra_token_rows} extra token rows left at initialisation" if report.extra_token_rows else "",
             ", ".join(sorted({next((p + "*" for p in UNUSED_PREFIXES if k.startswith(p) and p.endswith(".")), k)
                               for k in report.unused})) or "none")
    return report


def load_longformer(path: str | Path, *, max_positions: int | None = None,
                    attention_window: int | Sequence[int] | None = None,
                    attention: Mapping[str, Any] | None = None, **encoder_options: Any) -> Encoder:
    """A HF ``LongformerModel`` / ``LongformerForMaskedLM`` directory (e.g. allenai's longformer-base-4096) as a
    longdoc local_global :class:`~longdoc.models.Encoder` with separate global projections and per-layer windows.

    Args:
        path: the checkpoint directory (config.json + model.safetensors or pytorch_model.bin).
        max_positions, attention_window, attention: see :func:`encoder_config`; the windows default to the
            checkpoint's ``attention_window / 2`` per layer (HF's width is two-sided, longdoc's one-sided).
        **encoder_options: other Encoder arguments (``chunk_size_feed_forward``, ``gradient_checkpointing``).

    Returns:
        the encoder, in training mode (call ``.eval()`` to compare outputs). ``encoder(input_ids (B, N) int64,
        padding_mask (B, N) bool, global_attention_mask (B, N) bool) -> (B, N, D)`` equals HF's
        ``last_hidden_state`` (float32, 1e-5) at the real positions, for any N up to ``max_positions`` (HF pads to
        a multiple of its window internally; longdoc needs no padding).

    Raises:
        CheckpointError: not a Longformer directory (the message lists the files found and expected), a config it
            cannot represent, missing / unexpected tensors, a ``.bin`` that needs arbitrary unpickling (refused).
    """
    info = inspect_checkpoint(path, "longformer")
    kwargs = encoder_config(info, max_positions=max_positions, attention_window=attention_window, attention=attention)
    encoder = Encoder(**kwargs, **encoder_options)
    load_pretrained_weights(encoder, info)
    return encoder


def make_long(path: str | Path, max_positions: int = 4096,
              attention_window: int | Sequence[int] = DEFAULT_MAKE_LONG_WINDOW, *, kind: str | None = None,
              attention: Mapping[str, Any] | None = None, **encoder_options: Any) -> Encoder:
    """A HF BERT or RoBERTa directory as a long longdoc encoder, by allenai's ``convert_model_to_long`` recipe
    (Beltagy et al. 2020, section 5): positions copied block-wise to ``max_positions``, sliding-window attention,
    global projections initialised from the local ones.

    Args:
        path: the checkpoint directory (``BertModel`` / ``BertForMaskedLM`` / ``RobertaModel`` / ... layout).
        max_positions: tokens the long model takes (RoBERTa's two offset rows come on top, as allenai's 4098).
        attention_window: one-sided window (int or one per layer); 256 = allenai's ``attention_window=512``.
        kind: 'bert' | 'roberta', or None for config.json's ``model_type``.
        attention, **encoder_options: see :func:`load_longformer`.

    Returns:
        the encoder (training mode). For inputs of at most the original number of positions and a window that
        covers them it computes the original model's ``last_hidden_state`` (float32, 1e-5).

    Raises:
        CheckpointError: not a BERT / RoBERTa directory (a Longformer is long already: :func:`load_longformer`),
            plus the errors of :func:`load_longformer`.
    """
    info = inspect_checkpoint(path, kind)
    if info.kind == "longformer":
        raise CheckpointError(f"{path} is a Longformer checkpoint, long already: load it with load_longformer "
                              "(model.pretrained.kind=longformer)")
    kwargs = encoder_config(info, max_positions=max_positions, attention_window=attention_window, attention=attention)
    encoder = Encoder(**kwargs, **encoder_options)
    load_pretrained_weights(encoder, info)
    return encoder


# ------------------------------------------------------------------------------------------------
# longdoc -> HF Longformer
# ------------------------------------------------------------------------------------------------
def _layer_norms(encoder: Encoder) -> list[nn.LayerNorm]:
    return [m for m in encoder.modules() if isinstance(m, nn.LayerNorm)]


def longformer_config(encoder: Encoder) -> dict[str, Any]:
    """The ``config.json`` of HF's ``LongformerModel`` for ``encoder`` (``attention_window`` = 2 x longdoc's
    one-sided window, per layer). A BERT-style table (no ``padding_idx``) gets ``pad_token_id + 1`` rows in front,
    since Longformer numbers positions from ``pad_token_id + 1``.

    Raises:
        CheckpointError: an encoder HF's Longformer cannot represent: pre-norm, no embedding LayerNorm, positions
            other than learned, attention other than local_global (or causal, dilated, bias-free), different
            LayerNorm epsilons, a feed-forward activation other than exact GELU; each message names the setting.
    """
    if encoder.norm_position != "post" or encoder.embedding_norm is None:
        raise CheckpointError("save_longformer needs a post-norm encoder with an embedding LayerNorm "
                              "(model.norm_position=post, model.embedding_layer_norm=true): HF's Longformer has "
                              "no other layout")
    if not isinstance(encoder.position, LearnedPositionalEmbedding):
        raise CheckpointError(f"save_longformer needs learned positions (position=learned), the encoder has "
                              f"{type(encoder.position).__name__}")
    windows = []
    for i, block in enumerate(encoder.blocks):
        att = block.attention
        if not isinstance(att, LocalGlobalAttention) or att.causal or att.attention_dilation != 1 \
                or att.in_proj.bias is None:
            raise CheckpointError(f"block {i}: save_longformer needs bidirectional, undilated local_global attention "
                                  f"with biases (HF LongformerSelfAttention), got {att.extra_repr()}")
        activations = [m for m in block.feed_forward.modules() if isinstance(m, nn.GELU)]
        if len(activations) != 1 or activations[0].approximate != "none":
            raise CheckpointError(f"block {i}: the feed-forward activation is not the exact GELU of HF's "
                                  "hidden_act='gelu'")
        windows.append(2 * att.attention_window)
    eps = {m.eps for m in _layer_norms(encoder)}
    if len(eps) != 1:
        raise CheckpointError(f"the encoder's LayerNorms have several epsilons {sorted(eps)}; HF has one "
                              "layer_norm_eps")
    block0 = encoder.blocks[0]
    rows, d_model = encoder.position.weight.shape
    pad_id = 0 if encoder.pad_id is None else int(encoder.pad_id)
    padding_idx = encoder.position.padding_idx
    if padding_idx is not None and padding_idx != pad_id:
        raise CheckpointError(f"position.padding_idx={padding_idx} differs from the token pad id {pad_id}; HF's "
                              "Longformer uses pad_token_id for both")
    return {
        "architectures": ["LongformerModel"],
        "model_type": "longformer",
        "attention_window": windows,
        "hidden_size": d_model,
        "num_hidden_layers": len(encoder.blocks),
        "num_attention_heads": block0.attention.n_heads,
        "intermediate_size": _feed_forward_linears(block0, 0)[0].out_features,
        "hidden_act": "gelu",
        "hidden_dropout_prob": float(block0.dropout.p),
        "attention_probs_dropout_prob": float(block0.attention.dropout),
        "max_position_embeddings": rows if padding_idx is not None else rows + pad_id + 1,
        "type_vocab_size": 1 if encoder.token_type_embedding is None else encoder.token_type_embedding.num_embeddings,
        "vocab_size": encoder.token_embedding.num_embeddings,
        "layer_norm_eps": eps.pop(),
        "pad_token_id": pad_id,
        "initializer_range": 0.02,
    }


def save_longformer(encoder: Encoder, path: str | Path, *, tokenizer_dir: str | Path | None = None,
                    extra_config: Mapping[str, Any] | None = None) -> Path:
    """Write ``encoder`` as a HF ``LongformerModel`` directory: ``config.json`` (:func:`longformer_config`) and
    ``model.safetensors`` (float32 or the encoder's dtype), loadable by ``transformers.LongformerModel.from_pretrained``
    with the same ``last_hidden_state`` (HF initialises its pooler, which the encoder does not have).

    Shared global projections are written as copies of the local ones (the same function); a missing token-type
    table as one zero row.

    Args:
        encoder: a post-norm local_global encoder (from :func:`load_longformer`, :func:`make_long`, or a longdoc
            model trained with those settings). path: the directory (created).
        tokenizer_dir: a directory whose tokenizer files (:data:`TOKENIZER_FILES`) are copied beside the weights.
        extra_config: more ``config.json`` keys (``bos_token_id``, ``eos_token_id``, ...).

    Returns:
        the directory.

    Raises:
        CheckpointError: an encoder HF's Longformer cannot represent (see :func:`longformer_config`).
    """
    from safetensors.torch import save_file

    config = {**longformer_config(encoder), **dict(extra_config or {})}
    own = encoder.state_dict()
    padding_idx = encoder.position.padding_idx
    state: dict[str, torch.Tensor] = {}
    for link in tensor_links(encoder):
        if link.optional and link.ours not in own:
            continue
        value = own[link.ours].detach()
        if link.ours == "position.weight" and padding_idx is None:  # Longformer counts from pad_token_id + 1
            value = torch.cat([value.new_zeros(config["pad_token_id"] + 1, value.shape[1]), value], dim=0)
        for name, part in zip(link.hf, value.chunk(len(link.hf), dim=0)):
            state[name] = part.clone().contiguous()
    for i, block in enumerate(encoder.blocks):  # shared projections: HF's global ones are copies
        pre = f"encoder.layer.{i}.attention.self."
        for p in ("query", "key", "value"):
            for t in ("weight", "bias"):
                state.setdefault(f"{pre}{p}_global.{t}", state[f"{pre}{p}.{t}"].clone())
    if encoder.token_type_embedding is None:
        zeros = own["token_embedding.weight"].new_zeros(1, config["hidden_size"])
        state["embeddings.token_type_embeddings.weight"] = zeros
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (Path(tokenizer_dir) / name).is_file():
                shutil.copyfile(Path(tokenizer_dir) / name, out / name)
    log.info("save_longformer: %d tensors, %d layers (attention_window %s) written to %s", len(state),
             config["num_hidden_layers"], config["attention_window"], out)
    return out
