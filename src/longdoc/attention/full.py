"""Exact softmax attention through ``torch.nn.functional.scaled_dot_product_attention``.

Vaswani et al. 2017, "Attention Is All You Need", section 3.2.1, eq. (1):
softmax(Q K^T / sqrt(d_k)) V, restricted to real (non-padding) keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import MultiHeadProjection, check_mask, check_qkv


def full_pairs(padding_mask: torch.Tensor | None, n: int | None = None, *, causal: bool = False) -> torch.Tensor:
    """Which keys each query attends in :func:`full_attention`: real query ``i`` attends real key ``j`` (and
    ``j <= i`` when ``causal``).

    Args:
        padding_mask: (B, N) bool, True for real tokens, or None (then ``n`` gives N and B = 1).
        n: sequence length N when ``padding_mask`` is None.

    Returns:
        (B, N, N) bool, row = query, column = key; rows of padding queries are False.

    Raises:
        ValueError: neither ``padding_mask`` nor ``n`` given.
    """
    if padding_mask is None:
        if n is None:
            raise ValueError("full_pairs needs padding_mask or n")
        padding_mask = torch.ones(1, n, dtype=torch.bool)
    real = padding_mask.bool()
    out = real[:, :, None] & real[:, None, :]
    if causal:
        out &= torch.ones(out.shape[-1], out.shape[-1], dtype=torch.bool, device=out.device).tril()
    return out


def full_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    *,
    causal: bool = False,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Exact scaled dot-product attention over all real keys.

    Args:
        q, k, v: (B, H, N, Dh) float tensors.
        padding_mask: optional (B, N) bool, True for real tokens. Query ``i`` attends key ``j`` iff
            ``padding_mask[b, j]``. Outputs at padded query positions are finite but meaningless.
        causal: also require ``j <= i`` (autoregressive models).
        dropout_p: dropout on the attention probabilities (pass 0 at evaluation).

    Returns:
        (B, H, N, Dh) tensor of ``v``'s dtype.

    Raises:
        ValueError: shapes differ or the mask is not a (B, N) bool tensor.

    With no padding mask SDPA may pick its flash or memory-efficient kernel (CUDA); with one it
    gets a boolean mask broadcast over heads and queries, (B, 1, 1, N).
    """
    b, _, n, _ = check_qkv(q, k, v)
    padding_mask = check_mask("padding_mask", padding_mask, b, n)
    attn_mask = None
    # (under torch.compile the mask is always applied: testing it for padding would break the graph)
    if padding_mask is not None and (torch.compiler.is_compiling() or not bool(padding_mask.all())):
        # A row with no real key at all would give NaN: let such (fully padded) rows see every key.
        key_ok = padding_mask | ~padding_mask.any(dim=-1, keepdim=True)
        attn_mask = key_ok[:, None, None, :]
        if causal:
            idx = torch.arange(n, device=q.device)
            attn_mask = attn_mask & (idx[None, :] <= idx[:, None])[None, None]
            # position 0 always sees itself, so no causal row is empty unless position 0 is padding
            attn_mask = attn_mask | (idx[None, :] == idx[:, None])[None, None]
            causal = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=causal)


class FullAttention(MultiHeadProjection):
    """Multi-head exact attention on (B, N, D) hidden states.

    Args:
        d_model: model width D; n_heads: heads H (must divide D); dropout: attention-probability dropout;
        causal: autoregressive mask.

    ``forward(hidden (B, N, D), padding_mask (B, N) bool = None, global_attention_mask = None) -> (B, N, D)``.
    ``global_attention_mask`` is accepted for a uniform block signature and ignored: every token is global here.
    Memory is O(N^2) per head on the math path, O(N) with SDPA's flash / memory-efficient kernels.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, causal: bool = False, bias: bool = True):
        super().__init__(d_model, n_heads, n_inputs=3, dropout=dropout, bias=bias)
        self.causal = causal

    def forward(self, hidden, padding_mask=None, global_attention_mask=None):
        q, k, v = self.project(hidden)
        out = full_attention(q, k, v, padding_mask, causal=self.causal, dropout_p=self.attn_dropout)
        return self.merge(out)

    def attended_pairs(self, padding_mask=None, global_attention_mask=None, *, seq_len=None):
        """Which keys each query attends: every real key (``j <= i`` when causal), :func:`full_pairs`.

        Args:
            padding_mask: (B, N) bool or None (then ``seq_len`` gives N and B = 1). global_attention_mask: ignored.

        Returns:
            (B, H, N, N) bool, a view expanded over the heads (the rule is the same for every head); rows of
            padding queries are False.

        Raises:
            ValueError: neither ``padding_mask`` nor ``seq_len`` given.
        """
        pairs = full_pairs(padding_mask, seq_len, causal=self.causal)
        b, n, _ = pairs.shape
        return pairs[:, None].expand(b, self.n_heads, n, n)

    def values_map(self, hidden, padding_mask=None, global_attention_mask=None):
        """``f(v (B, H, N, Dh)) -> (B, H, N, Dh)``: :func:`full_attention` with this layer's q, k of ``hidden``
        (B, N, D), no dropout."""
        q, k, _ = self.project(hidden)
        return lambda v: full_attention(q, k, v, padding_mask, causal=self.causal, dropout_p=0.0)
