"""Transformer block with pluggable attention: pre-norm (Xiong et al. 2020, "On Layer Normalization in the
Transformer Architecture", Pre-LN; the default) or post-norm (Vaswani et al. 2017; BERT / RoBERTa / Longformer,
the layout of their pretrained weights)."""

from __future__ import annotations

import torch
from torch import nn

from .dropout import Dropout
from .feedforward import FeedForward

#: Where the LayerNorms sit (``model.norm_position``).
NORM_POSITIONS = ("pre", "post")


def check_norm_position(norm_position: str) -> str:
    """Return ``norm_position`` if it is 'pre' or 'post'.

    Raises:
        ValueError: any other value (names ``model.norm_position``).
    """
    if norm_position not in NORM_POSITIONS:
        raise ValueError(f"model.norm_position must be one of {list(NORM_POSITIONS)} (pre: x + f(LN(x)); post: "
                         f"LN(x + f(x)), as BERT / RoBERTa / Longformer), got {norm_position!r}")
    return norm_position


class Block(nn.Module):
    """Pre-norm: x + Attention(LN(x)), then + FeedForward(LN(x)). Post-norm: x = LN(x + Attention(x)), then
    LN(x + FeedForward(x)) (HF ``BertLayer``: ``attention.output.LayerNorm`` is ``norm_attn``, ``output.LayerNorm``
    is ``norm_ff``). Both branches end with dropout ``dropout`` (HF ``hidden_dropout_prob``).

    The two pre-norm residual branches are exposed as ``attention_branch`` (f) and ``feed_forward_branch`` (g)
    so the reversible stack can couple them as Y1 = X1 + f(X2), Y2 = X2 + g(Y1) (pre-norm only).

    Args:
        attention: an attention module with ``forward(hidden, padding_mask, global_attention_mask)``.
        d_model, d_ff, dropout, chunk_size_feed_forward: see :class:`FeedForward`.
        norm_position: 'pre' (default) or 'post'.
        layer_norm_eps: epsilon of both LayerNorms (HF ``layer_norm_eps``: BERT 1e-12, RoBERTa / Longformer 1e-5).
        activation_dropout: dropout after the feed-forward's GELU; None = ``dropout`` (HF BERT / RoBERTa /
            Longformer have none there: 0.0).

    ``forward(x (B, N, D), padding_mask (B, N) bool = None, global_attention_mask (B, N) bool = None) -> (B, N, D)``.
    """

    def __init__(self, attention: nn.Module, d_model: int, d_ff: int, dropout: float = 0.0,
                 chunk_size_feed_forward: int = 0, *, norm_position: str = "pre", layer_norm_eps: float = 1e-5,
                 activation_dropout: float | None = None):
        super().__init__()
        self.norm_position = check_norm_position(norm_position)
        self.norm_attn = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.attention = attention
        self.norm_ff = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.feed_forward = FeedForward(d_model, d_ff, dropout if activation_dropout is None else activation_dropout,
                                        chunk_size_feed_forward)
        self.dropout = Dropout(dropout)

    def attention_branch(self, x, padding_mask=None, global_attention_mask=None) -> torch.Tensor:
        return self.dropout(self.attention(self.norm_attn(x), padding_mask, global_attention_mask))

    def feed_forward_branch(self, x) -> torch.Tensor:
        return self.dropout(self.feed_forward(self.norm_ff(x)))

    def forward(self, x, padding_mask=None, global_attention_mask=None):
        if self.norm_position == "post":
            x = self.norm_attn(x + self.dropout(self.attention(x, padding_mask, global_attention_mask)))
            return self.norm_ff(x + self.dropout(self.feed_forward(x)))
        x = x + self.attention_branch(x, padding_mask, global_attention_mask)
        return x + self.feed_forward_branch(x)
