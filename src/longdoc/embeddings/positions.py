"""Positional encodings besides axial: learned table, fixed sinusoids, none; and the registry."""

from __future__ import annotations

import math

import torch
from torch import nn

from .axial import AxialPositionalEmbedding


def padded_position_ids(real: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """RoBERTa's position ids (fairseq ``make_positions``, as HF RoBERTa / Longformer compute them from the input
    ids): the ``t``-th real token of a row (counting from 0) gets ``padding_idx + 1 + t``, padding gets ``padding_idx``.

    Args:
        real: (B, N) bool, True for real tokens. padding_idx: the checkpoint's padding row (RoBERTa: 1).

    Returns:
        (B, N) int64 position ids.
    """
    counts = torch.cumsum(real.to(torch.int64), dim=-1)
    return torch.where(real, counts + padding_idx, torch.full_like(counts, padding_idx))


class LearnedPositionalEmbedding(nn.Module):
    """A learned (max_positions x d_model) table (Devlin et al. 2019, BERT section 3).

    Args:
        max_positions: rows of the table. d_model: width. init_std: N(0, init_std) initialisation.
        padding_idx: None (BERT): token ``t`` reads row ``t``. An int (RoBERTa / Longformer: 1, HF's
            ``pad_token_id``): the encoder gives RoBERTa's ids (:func:`padded_position_ids`): real token ``t`` reads
            row ``padding_idx + 1 + t``, padding reads row ``padding_idx``, so the table needs
            ``padding_idx + 1`` rows more than the longest sequence (HF RoBERTa: 514 rows for 512 tokens).

    ``forward(position_ids (..., N) int64) -> (..., N, d_model)``.

    Raises:
        ValueError: a position >= ``max_positions`` (set ``position.max_positions``); a negative ``padding_idx``.
    """

    def __init__(self, max_positions: int, d_model: int, init_std: float = 0.02, padding_idx: int | None = None):
        super().__init__()
        if padding_idx is not None and (isinstance(padding_idx, bool) or not isinstance(padding_idx, int)
                                        or not 0 <= padding_idx < max_positions):
            raise ValueError(f"position.padding_idx must be null or an integer in [0, max_positions={max_positions}), "
                             f"got {padding_idx!r} (RoBERTa / Longformer: 1)")
        self.max_positions, self.padding_idx = max_positions, padding_idx
        self.weight = nn.Parameter(torch.randn(max_positions, d_model) * init_std)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        if position_ids.numel() and int(position_ids.max()) >= self.max_positions:
            raise ValueError(f"position {int(position_ids.max())} >= position.max_positions={self.max_positions}; "
                             "raise position.max_positions to the longest sequence"
                             + (f" + {self.padding_idx + 1} (position.padding_idx + 1)" if self.padding_idx is not None
                                else ""))
        return self.weight[position_ids]


class SinusoidalPositionalEmbedding(nn.Module):
    """Fixed sinusoids (Vaswani et al. 2017, section 3.5): PE[j, 2i] = sin(j / 10000^(2i/d)), PE[j, 2i+1] = cos(...).

    Works for any position; no parameters. ``forward(position_ids (..., N)) -> (..., N, d_model)`` float32.
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = d_model
        inv = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        self.register_buffer("inv_freq", inv, persistent=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        ang = position_ids.to(torch.float32)[..., None] * self.inv_freq
        pe = torch.stack([ang.sin(), ang.cos()], dim=-1).flatten(-2)
        return pe[..., : self.d_model]


def build_position(name: str, d_model: int, max_seq_len: int, **kwargs) -> nn.Module | None:
    """Build the positional encoding ``name`` ('axial', 'learned', 'sinusoidal', 'none').

    For 'learned', ``max_positions=None`` sizes the table for ``max_seq_len`` (plus ``padding_idx + 1`` rows with
    RoBERTa's ``padding_idx``). For 'axial', ``axial_dims=None`` splits ``d_model`` in two halves and ``axial_shape=None`` picks
    l1 = ceil(sqrt(max_seq_len)), l2 = ceil(max_seq_len / l1).

    Raises:
        ValueError: unknown name; axial dims not summing to ``d_model``; axial shape (or learned table)
            too small for ``max_seq_len`` -- each message names the key and the fix.
    """
    if name == "none":
        return None
    if name == "sinusoidal":
        return SinusoidalPositionalEmbedding(d_model)
    if name == "learned":
        padding_idx = kwargs.get("padding_idx")
        offset = 0 if padding_idx is None else int(padding_idx) + 1
        max_positions = kwargs.get("max_positions") or max_seq_len + offset
        if max_positions < max_seq_len + offset:
            raise ValueError(f"position.max_positions={max_positions} is smaller than the longest sequence "
                             f"({max_seq_len})" + (f" + padding_idx + 1 ({offset})" if offset else "")
                             + "; raise it or leave it null")
        return LearnedPositionalEmbedding(max_positions, d_model, kwargs.get("init_std", 0.02), padding_idx)
    if name == "axial":
        dims = kwargs.get("axial_dims")
        shape = kwargs.get("axial_shape")
        if dims is None:
            dims = (d_model // 2, d_model - d_model // 2)
        if shape is None:
            l1 = math.ceil(math.sqrt(max_seq_len))
            shape = (l1, math.ceil(max_seq_len / l1))
        dims, shape = tuple(dims), tuple(shape)
        if len(dims) == 2 and sum(dims) != d_model:
            raise ValueError(f"position.axial_dims={list(dims)} sums to {sum(dims)} but model.d_model={d_model}; "
                             f"they must sum to d_model (e.g. [{d_model // 2}, {d_model - d_model // 2}], or null for that split)")
        if len(shape) == 2 and shape[0] * shape[1] < max_seq_len:
            raise ValueError(f"position.axial_shape={list(shape)} covers {shape[0] * shape[1]} positions but the longest "
                             f"sequence has {max_seq_len}; pick l1 * l2 >= {max_seq_len} "
                             f"(e.g. [{math.ceil(math.sqrt(max_seq_len))}, {math.ceil(max_seq_len / math.ceil(math.sqrt(max_seq_len)))}]) or null")
        return AxialPositionalEmbedding(shape, dims, kwargs.get("init_std", 0.02))
    raise ValueError(f"unknown position encoding {name!r}: choose one of ['axial', 'learned', 'sinusoidal', 'none']")
