"""Pieces shared by every attention module: argument checks, masks, head split/merge, projections, and the
introspection interface (``attended_pairs``, ``values_map``, ``attention_probabilities``)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def check_positive_int(name: str, value, *, hint: str = "") -> int:
    """Return ``value`` as an int, or raise ``ValueError`` naming the key when it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        msg = f"{name} must be a positive integer, got {value!r}"
        raise ValueError(msg + (f"; {hint}" if hint else ""))
    return value


def check_qkv(q: torch.Tensor, *others: torch.Tensor) -> tuple[int, int, int, int]:
    """Check that attention inputs are (B, H, N, Dh) tensors of one shape; return that shape."""
    if q.dim() != 4:
        raise ValueError(f"attention inputs must be (batch, heads, seq_len, head_dim), got shape {tuple(q.shape)}")
    for t in others:
        if t.shape != q.shape:
            raise ValueError(f"attention inputs must share one shape, got {tuple(q.shape)} and {tuple(t.shape)}")
    return tuple(q.shape)  # type: ignore[return-value]


def check_mask(name: str, mask: torch.Tensor | None, batch: int, seq_len: int) -> torch.Tensor | None:
    """Check a boolean (B, N) mask; raise ``ValueError`` for a wrong shape or dtype."""
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor (True = {'real token' if name == 'padding_mask' else 'global token'}), got {mask.dtype}; "
                         "longdoc never takes additive float masks")
    if tuple(mask.shape) != (batch, seq_len):
        raise ValueError(f"{name} must have shape (batch, seq_len) = {(batch, seq_len)}, got {tuple(mask.shape)}")
    return mask


def pad_seq(x: torch.Tensor, multiple: int, dim: int = 2, value=0) -> tuple[torch.Tensor, int]:
    """Right-pad ``x`` along ``dim`` to a multiple of ``multiple``; return the padded tensor and the pad count."""
    n = x.shape[dim]
    pad = (-n) % multiple
    if pad == 0:
        return x, 0
    spec = [0, 0] * (x.dim() - 1 - (dim % x.dim())) + [0, pad]
    return F.pad(x, spec, value=value), pad


def neg_inf(dtype: torch.dtype) -> float:
    """The fill value for masked-out scores: ``torch.finfo(dtype).min`` (finite, so fully masked rows stay finite)."""
    return torch.finfo(dtype).min


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype for softmax statistics: at least float32 (float64 stays float64), even under bf16/fp16 autocast."""
    return torch.promote_types(dtype, torch.float32)


def softmax_scale(head_dim: int) -> float:
    """1 / sqrt(head_dim), Vaswani et al. 2017 eq. (1)."""
    return 1.0 / math.sqrt(head_dim)


class MultiHeadProjection(nn.Module):
    """Input and output projections shared by the attention modules (their base class).

    Splits (B, N, D) hidden states into ``n_heads`` heads of size D / n_heads and merges them back. Subclasses
    implement ``forward`` and the introspection methods :meth:`attended_pairs` (which keys each query attends,
    from the kernel's own masking rule) and :meth:`values_map` (the kernel as a function of the values), on which
    :meth:`attention_probabilities` is built.

    Args:
        d_model: model width D.
        n_heads: number of heads H; must divide ``d_model``.
        n_inputs: number of projected tensors (3 for q, k, v; 2 for Reformer's shared qk and v).
        dropout: dropout probability on attention probabilities (used by the subclasses).

    Raises:
        ValueError: ``n_heads`` does not divide ``d_model``, or a size is not positive.
    """

    def __init__(self, d_model: int, n_heads: int, n_inputs: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        check_positive_int("model.d_model", d_model)
        check_positive_int("model.n_heads", n_heads)
        if d_model % n_heads:
            raise ValueError(
                f"model.n_heads={n_heads} must divide model.d_model={d_model}; pick n_heads in "
                f"{[h for h in range(1, d_model + 1) if d_model % h == 0 and h <= 64]}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"attention dropout must be in [0, 1), got {dropout}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.dropout = dropout
        self.in_proj = nn.Linear(d_model, n_inputs * d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def project_fused(self, hidden: torch.Tensor, *, linear: nn.Linear | None = None,
                      parts: slice | None = None) -> torch.Tensor:
        """(B, N, D) -> (B, N, P, H, Dh): the projected inputs of one matmul, a view of its (B, N, P * D) output.

        Args:
            hidden: (B, N, D) hidden states (any float dtype; autocast applies).
            linear: a ``D -> n_inputs * D`` projection laid out like ``in_proj`` (default ``in_proj``), e.g.
                Longformer's separate global projection.
            parts: which of the projected inputs to compute, e.g. ``slice(1, 3)`` for k and v only (default all);
                only those rows of the weight are multiplied.
        """
        linear = self.in_proj if linear is None else linear
        b, n, _ = hidden.shape
        if parts is None:
            x = linear(hidden)
        else:
            rows = slice(parts.start * self.d_model, parts.stop * self.d_model)
            x = F.linear(hidden, linear.weight[rows], None if linear.bias is None else linear.bias[rows])
        return x.view(b, n, -1, self.n_heads, self.head_dim)

    def project(self, hidden: torch.Tensor, *, linear: nn.Linear | None = None,
                parts: slice | None = None) -> tuple[torch.Tensor, ...]:
        """(B, N, D) -> tuple of (B, H, N, Dh) views, one per projected input (see :meth:`project_fused`).

        The inputs are split with ``unbind``, whose backward is one ``stack`` (not one zero-filled tensor per input).
        """
        return tuple(x.transpose(1, 2) for x in self.project_fused(hidden, linear=linear, parts=parts).unbind(2))

    def merge(self, out: torch.Tensor) -> torch.Tensor:
        """(B, H, N, Dh) -> (B, N, D) through the output projection."""
        b, h, n, dh = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * dh))

    @property
    def attn_dropout(self) -> float:
        return self.dropout if self.training else 0.0

    # -- introspection: implemented by each attention module ----------------------------------------
    def attended_pairs(self, padding_mask: torch.Tensor | None = None,
                       global_attention_mask: torch.Tensor | None = None, *, seq_len: int | None = None,
                       **kwargs) -> torch.Tensor:
        """Which keys each query attends: (B, H, N, N) bool, row = query, column = key (see the subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} does not define attended_pairs")

    def values_map(self, hidden: torch.Tensor, padding_mask: torch.Tensor | None = None,
                   global_attention_mask: torch.Tensor | None = None, **kwargs) -> Callable[[torch.Tensor], torch.Tensor]:
        """The layer's attention on ``hidden`` as a function of the values: ``f(v (B, H, N, Dh)) -> P @ v``
        (B, H, N, Dh), with the queries and keys this layer projects from ``hidden`` and no dropout."""
        raise NotImplementedError(f"{type(self).__name__} does not define values_map")

    def attention_probabilities(self, hidden: torch.Tensor, padding_mask: torch.Tensor | None = None,
                                global_attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """The attention probabilities ``P`` of this layer on ``hidden``: (B, H, N, N) float32, rows = queries.

        Measured through the layer's own kernel (:meth:`values_map`): its output is ``P @ V``, so the values
        ``V[..., j, c] = 1`` for ``j = j0 + c`` read the columns ``j0 .. j0 + Dh - 1``; ``ceil(N / Dh)`` kernel
        calls without gradients. The values are float32 (float64 for a float64 ``hidden``). Rows of padding
        queries are zero. ``kwargs`` go to :meth:`values_map` (LSH: ``buckets``).

        Args:
            hidden: (B, N, D) float, the layer's input. padding_mask / global_attention_mask: (B, N) bool or None.

        Raises:
            ValueError: the errors of the layer's kernel (mask shapes and dtypes; LSH: no buckets).
        """
        b, n, _ = hidden.shape
        h, dh = self.n_heads, self.head_dim
        dtype = hidden.dtype if hidden.dtype in (torch.float32, torch.float64) else torch.float32
        probs = torch.zeros(b, h, n, n, dtype=torch.float32, device=hidden.device)
        with torch.no_grad():
            f = self.values_map(hidden, padding_mask, global_attention_mask, **kwargs)
            for j0 in range(0, n, dh):
                w = min(dh, n - j0)
                v = torch.zeros(b, h, n, dh, dtype=dtype, device=hidden.device)
                v[:, :, torch.arange(j0, j0 + w), torch.arange(w)] = 1.0
                probs[..., j0:j0 + w] = f(v)[..., :w].float()
        if padding_mask is not None:
            probs *= padding_mask[:, None, :, None]
        return probs

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, dropout={self.dropout}"
