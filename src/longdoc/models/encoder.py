"""The encoder: token embedding + positional encoding -> pre-norm blocks -> final LayerNorm (default), or the
BERT / RoBERTa / Longformer layout of pretrained weights: + token type, embedding LayerNorm -> post-norm blocks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..attention import build_attention
from ..embeddings import build_position, padded_position_ids
from ..layers import Block, Dropout, check_norm_position
from ..layers.reversible import ReversibleSequence


def layer_attention_specs(attention: Mapping, depth: int, attention_layers: Sequence[str] | None = None,
                          attention_options: Mapping[str, Mapping] | None = None) -> list[tuple[str, dict]]:
    """Resolve the (name, kwargs) of every layer's attention.

    List-valued kwargs are per-layer values and must have ``depth`` entries.

    Raises:
        ValueError: a per-layer list of the wrong length; an ``attention_layers`` name with no options.
    """
    attention = dict(attention)
    main = attention.pop("name")
    options = {k: dict(v) for k, v in (attention_options or {}).items()}
    for v in options.values():
        v.pop("name", None)
    options[main] = attention
    names = [main] * depth
    if attention_layers:
        missing = [n for n in attention_layers if n not in options]
        if missing:
            raise ValueError(f"model.attention_layers names {missing} but no settings are given for them; "
                             f"known: {sorted(options)} (see attention_options in conf/train.yaml)")
        names = [attention_layers[i % len(attention_layers)] for i in range(depth)]
    specs = []
    for i, name in enumerate(names):
        kw = {}
        for key, val in options[name].items():
            if isinstance(val, (list, tuple)):
                if len(val) != depth:
                    raise ValueError(f"attention.{key}={list(val)} has {len(val)} entries but model.depth={depth}; "
                                     f"give one value per layer or a single value")
                val = val[i]
            kw[key] = val
        specs.append((name, kw))
    return specs


class Encoder(nn.Module):
    """A stack of ``depth`` pre-norm (or post-norm) blocks with pluggable attention over embedded tokens.

    Args:
        vocab_size: number of token ids. pad_id: id of the padding token (its embedding is zero).
        d_model: width D. n_heads: heads per attention layer (must divide D). depth: number of blocks.
        d_ff: feed-forward width. dropout: residual / embedding / feed-forward dropout.
        attention: ``{"name": "full" | "lsh" | "local_global", **constructor kwargs}`` (conf/attention/*.yaml).
            Any value given as a list holds one value per layer (e.g. ``attention_window: [16, 32, 64]``).
        attention_layers: optional list of attention names cycled through the depth (Reformer's
            ``attn_layers``), e.g. ``[local_global, lsh]``; their settings come from ``attention_options``
            (``attention`` wins for its own name).
        attention_options: ``{name: {kwargs}}`` for the names in ``attention_layers``.
        position: ``{"name": "axial" | "learned" | "sinusoidal" | "none", **kwargs}`` (conf/position/*.yaml).
        max_seq_len: longest sequence the model must handle (sizes the positional table).
        chunk_size_feed_forward: see :class:`longdoc.layers.FeedForward`.
        reversible: RevNet coupling Y1 = X1 + Attn(X2), Y2 = X2 + FF(Y1) with activations recomputed in
            backward (Reformer section 3); the two streams start as copies of the embeddings and are
            averaged at the end.
        gradient_checkpointing: recompute each block in backward with ``torch.utils.checkpoint``
            (the plain alternative to ``reversible``; the two are exclusive).
        norm_position: 'pre' (default; the stack ends with a LayerNorm) or 'post' (LN(x + f(x)) in every block, no
            final LayerNorm: BERT / RoBERTa / Longformer; not with ``reversible``, whose coupling needs pre-norm
            branches). layer_norm_eps, activation_dropout: see :class:`longdoc.layers.Block`.
        type_vocab_size: > 0 adds row 0 of a (type_vocab_size, D) token-type table to every token (HF
            ``token_type_embeddings``: BERT 2, RoBERTa / Longformer 1; longdoc batches have one segment); 0 = none.
        embedding_layer_norm: a LayerNorm (``layer_norm_eps``) on the summed embeddings, before the dropout (HF
            ``embeddings.LayerNorm``).
        With ``position.padding_idx`` (learned positions, RoBERTa / Longformer) the position ids count the real
        tokens of each row (``padding_mask``, else ``input_ids != pad_id``): see
        :func:`longdoc.embeddings.padded_position_ids`.

    ``forward(input_ids (B, N) int64, padding_mask (B, N) bool = None, global_attention_mask (B, N) bool = None)
    -> (B, N, D)`` hidden states.

    Raises:
        ValueError: from the attention / position builders for invalid settings (key named in the message),
            an input longer than ``max_seq_len``, an unknown ``norm_position``, ``reversible`` with post-norm, a
            negative ``type_vocab_size``.
    """

    def __init__(self, vocab_size: int, d_model: int, n_heads: int, depth: int, d_ff: int,
                 attention: Mapping, position: Mapping, max_seq_len: int, dropout: float = 0.1,
                 pad_id: int = 0, chunk_size_feed_forward: int = 0, reversible: bool = False,
                 gradient_checkpointing: bool = False, attention_layers: Sequence[str] | None = None,
                 attention_options: Mapping[str, Mapping] | None = None, norm_position: str = "pre",
                 layer_norm_eps: float = 1e-5, activation_dropout: float | None = None, type_vocab_size: int = 0,
                 embedding_layer_norm: bool = False):
        super().__init__()
        if depth <= 0:
            raise ValueError(f"model.depth must be a positive integer, got {depth}")
        if reversible and gradient_checkpointing:
            raise ValueError("model.reversible and model.gradient_checkpointing are exclusive: "
                             "reversible layers already recompute activations; set one of them to false")
        self.norm_position = check_norm_position(norm_position)
        if reversible and norm_position == "post":
            raise ValueError("model.reversible needs model.norm_position=pre: the RevNet coupling Y1 = X1 + f(X2) has "
                             "no place for post-norm's LayerNorm after the residual sum (BERT / RoBERTa / Longformer "
                             "weights); use model.gradient_checkpointing=true to save memory instead")
        if isinstance(type_vocab_size, bool) or not isinstance(type_vocab_size, int) or type_vocab_size < 0:
            raise ValueError(f"model.type_vocab_size must be an integer >= 0 (0 = no token-type table), "
                             f"got {type_vocab_size!r}")
        self.pad_id = pad_id
        self.reversible, self.gradient_checkpointing = reversible, gradient_checkpointing
        attention, position = dict(attention), dict(position)
        self.max_seq_len = max_seq_len
        self.token_embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.position = build_position(position.pop("name"), d_model=d_model, max_seq_len=max_seq_len, **position)
        self.token_type_embedding = nn.Embedding(type_vocab_size, d_model) if type_vocab_size else None
        self.embedding_norm = nn.LayerNorm(d_model, eps=layer_norm_eps) if embedding_layer_norm else None
        self.dropout = Dropout(dropout)
        specs = layer_attention_specs(attention, depth, attention_layers, attention_options)
        self.blocks = nn.ModuleList(
            Block(build_attention(name, d_model, n_heads, **kw), d_model, d_ff, dropout, chunk_size_feed_forward,
                  norm_position=norm_position, layer_norm_eps=layer_norm_eps, activation_dropout=activation_dropout)
            for name, kw in specs
        )
        self.reversible_stack = ReversibleSequence(self.blocks) if reversible else None
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps) if norm_position == "pre" else nn.Identity()

    def position_ids(self, input_ids: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) ``arange`` positions, or (B, N) RoBERTa positions with ``position.padding_idx``
        (:func:`longdoc.embeddings.padded_position_ids` on ``padding_mask``, else ``input_ids != pad_id``)."""
        padding_idx = getattr(self.position, "padding_idx", None)
        if padding_idx is None:
            return torch.arange(input_ids.shape[1], device=input_ids.device)
        if padding_mask is not None:
            real = padding_mask
        elif self.pad_id is not None:
            real = input_ids != self.pad_id
        else:
            real = torch.ones_like(input_ids, dtype=torch.bool)
        return padded_position_ids(real, padding_idx)

    def embed(self, input_ids: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N) int64 -> (B, N, D): token + position (+ token type 0) embeddings (-> LayerNorm) -> dropout."""
        x = self.token_embedding(input_ids)
        if self.position is not None:
            x = x + self.position(self.position_ids(input_ids, padding_mask)).to(x.dtype)
        if self.token_type_embedding is not None:
            x = x + self.token_type_embedding.weight[0].to(x.dtype)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        return self.dropout(x)

    def forward(self, input_ids, padding_mask=None, global_attention_mask=None):
        x = self.embed(input_ids, padding_mask)
        if self.reversible_stack is not None:
            y1, y2 = self.reversible_stack(x, x, padding_mask, global_attention_mask)
            return self.norm((y1 + y2) / 2)
        for block in self.blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, padding_mask, global_attention_mask, use_reentrant=False)
            else:
                x = block(x, padding_mask, global_attention_mask)
        return self.norm(x)
