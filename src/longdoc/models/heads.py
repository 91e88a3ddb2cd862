"""Task heads on top of the encoder: sequence classification, two-tower matching, next-token prediction."""

from __future__ import annotations

import torch
from torch import nn

POOLINGS = ("cls", "mean")
INTERACTIONS = ("nli", "concat")


def check_pooling(pooling: str) -> str:
    """Return ``pooling`` if it is 'cls' or 'mean'.

    Raises:
        ValueError: any other value (names ``model.pooling``).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"model.pooling must be 'cls' or 'mean', got {pooling!r}")
    return pooling


def pool(hidden: torch.Tensor, padding_mask: torch.Tensor | None = None, pooling: str = "cls") -> torch.Tensor:
    """One vector per sequence.

    Args:
        hidden: (B, N, D) hidden states.
        padding_mask: optional (B, N) bool, True for real tokens (used by 'mean' only).
        pooling: 'cls' (the hidden state at position 0, BERT section 3) or 'mean' (mean over real tokens;
            over all positions without a mask).

    Returns:
        (B, D) tensor in ``hidden``'s dtype.
    """
    if pooling == "cls":
        return hidden[:, 0]
    if padding_mask is None:
        return hidden.mean(dim=1)
    m = padding_mask.to(hidden.dtype)[..., None]
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


class SequenceClassificationHead(nn.Module):
    """Pool the sequence, then Linear -> tanh -> dropout -> Linear to ``num_classes`` logits.

    Args:
        d_model: width D. num_classes: C. dropout: before the output layer.
        pooling: 'cls' (hidden state at position 0, BERT section 3) or 'mean' (mean over real tokens).

    ``forward(hidden (B, N, D), padding_mask (B, N) bool = None) -> (B, C)`` logits.

    Raises:
        ValueError: unknown pooling.
    """

    def __init__(self, d_model: int, num_classes: int, pooling: str = "cls", dropout: float = 0.1):
        super().__init__()
        self.pooling = check_pooling(pooling)
        self.net = nn.Sequential(nn.Linear(d_model, d_model), nn.Tanh(), nn.Dropout(dropout), nn.Linear(d_model, num_classes))

    def forward(self, hidden: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(pool(hidden, padding_mask, self.pooling))


class RetrievalHead(nn.Module):
    """Two-tower matching head (Long Range Arena section 3.3, Tay et al. 2021): pool each document's
    encoding to u and v, combine them, then an MLP to ``num_classes`` logits.

    Features: ``interaction='nli'``: ``[u, v, u * v, u - v]`` (4D, the NLI-style combination of the LRA
    paper, ``classifier_head_dual(..., interaction='NLI')`` in LRA's ``models/layers/common_layers.py``);
    ``'concat'``: ``[u, v]`` (2D, what LRA's released matching code runs, since its ``train.py`` leaves
    ``interaction=None``). MLP: Linear(features -> D) -> ReLU -> dropout -> Linear(D -> C). (LRA's own MLP is
    Dense(mlp_dim) -> ReLU -> Dense(mlp_dim // 2) -> ReLU -> Dense(C), without dropout.)

    Args:
        d_model: width D. num_classes: C. pooling: 'cls' | 'mean' (see :func:`pool`).
        dropout: after the hidden layer. interaction: 'nli' | 'concat'.

    ``forward(hidden_1 (B, N1, D), hidden_2 (B, N2, D), padding_mask_1 (B, N1) bool = None,
    padding_mask_2 (B, N2) bool = None) -> (B, C)`` logits. :meth:`features` gives the MLP input.

    Raises:
        ValueError: unknown pooling (``model.pooling``) or interaction (``model.interaction``).
    """

    def __init__(self, d_model: int, num_classes: int, pooling: str = "cls", dropout: float = 0.1,
                 interaction: str = "nli"):
        super().__init__()
        self.pooling = check_pooling(pooling)
        if interaction not in INTERACTIONS:
            raise ValueError(f"model.interaction must be one of {list(INTERACTIONS)} (retrieval: 'nli' = [u, v, u*v, u-v], "
                             f"'concat' = [u, v]), got {interaction!r}")
        self.interaction = interaction
        width = (4 if interaction == "nli" else 2) * d_model
        self.mlp = nn.Sequential(nn.Linear(width, d_model), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_model, num_classes))

    def features(self, hidden_1: torch.Tensor, hidden_2: torch.Tensor, padding_mask_1: torch.Tensor | None = None,
                 padding_mask_2: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 4D) ``[u, v, u*v, u-v]`` (or (B, 2D) ``[u, v]``) with u, v the pooled documents."""
        u = pool(hidden_1, padding_mask_1, self.pooling)
        v = pool(hidden_2, padding_mask_2, self.pooling)
        if self.interaction == "concat":
            return torch.cat([u, v], dim=-1)
        return torch.cat([u, v, u * v, u - v], dim=-1)

    def forward(self, hidden_1, hidden_2, padding_mask_1=None, padding_mask_2=None):
        return self.mlp(self.features(hidden_1, hidden_2, padding_mask_1, padding_mask_2))
