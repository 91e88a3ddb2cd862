"""Position-wise feed-forward network, optionally applied in chunks along the sequence."""

from __future__ import annotations

import torch
from torch import nn

from .dropout import Dropout


class FeedForward(nn.Module):
    """Linear(D, d_ff) -> GELU -> dropout -> Linear(d_ff, D) (Vaswani et al. 2017, section 3.3).

    Args:
        d_model: width D. d_ff: hidden width. dropout: dropout after the activation.
        chunk_size_feed_forward: if > 0, apply the network to chunks of this many positions at a
            time (Reformer section 3, "Chunking"): peak memory of the d_ff activation is
            O(B * chunk * d_ff) instead of O(B * N * d_ff) at inference and under reversible /
            checkpointed recomputation. Any N works (the last chunk may be shorter). 0 = no chunking.

    ``forward(x (B, N, D)) -> (B, N, D)``.

    Raises:
        ValueError: non-positive sizes or a negative chunk size.
    """

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, chunk_size_feed_forward: int = 0):
        super().__init__()
        if d_ff <= 0 or d_model <= 0:
            raise ValueError(f"model.d_ff and model.d_model must be positive, got d_ff={d_ff}, d_model={d_model}")
        if chunk_size_feed_forward < 0:
            raise ValueError(f"model.chunk_size_feed_forward must be >= 0 (0 = off), got {chunk_size_feed_forward}")
        self.chunk_size_feed_forward = chunk_size_feed_forward
        self.net = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), Dropout(dropout), nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.chunk_size_feed_forward
        if k <= 0 or x.shape[1] <= k:
            return self.net(x)
        return torch.cat([self.net(part) for part in x.split(k, dim=1)], dim=1)
