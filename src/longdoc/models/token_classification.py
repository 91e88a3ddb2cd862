"""Token classification (named entities, BIO tags, over long documents): the per-token head and loss of
HuggingFace's ``LongformerForTokenClassification`` / ``run_ner.py``.

* :class:`TokenClassificationHead`: (B, N, D) hidden states -> (B, N, C) logits (dropout -> Linear).
* :func:`token_classification_loss`: cross-entropy over the tokens that carry a label; ``-100`` marks the others
  (special tokens, padding, the second and later sub-words of a word, tokens a window shares with its neighbour,
  samples repeated for DDP), as ``torch.nn.CrossEntropyLoss()``'s default ``ignore_index``.

The metrics (token accuracy, seqeval's entity precision / recall / F1, the most-frequent-tag baseline, the BIO
check) are in ``longdoc.lightning.task_metrics``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TokenClassificationHead(nn.Module):
    """Dropout -> Linear(D, C) on every position (HF's ``LongformerForTokenClassification`` head).

    Args:
        d_model: width D. num_labels: C, the number of tags (>= 1). dropout: on the hidden states.

    ``forward(hidden (B, N, D)) -> (B, N, C)`` logits in ``hidden``'s dtype.

    Raises:
        ValueError: ``num_labels < 1``.
    """

    def __init__(self, d_model: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        if int(num_labels) < 1:
            raise ValueError(f"num_labels={num_labels}: a token classification head needs at least one tag")
        self.num_labels = int(num_labels)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, self.num_labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(hidden))


def token_classification_loss(logits: torch.Tensor, labels: torch.Tensor,
                              ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy (nats) over the labelled tokens, computed in float32 (``F.cross_entropy`` with
    ``ignore_index``, as HF's token classification models).

    Args:
        logits: (B, N, C) any float dtype. labels: (B, N) int64 tag ids in ``0 .. C - 1``, ``ignore_index`` for
            tokens without a label.
        ignore_index: the label of unlabelled tokens (:data:`longdoc.data.IGNORE_INDEX`).

    Returns:
        ``(loss, count)``: the mean over the labelled tokens (float32 scalar; 0 when there are none) and their
        number (int64 scalar tensor).

    Raises:
        ValueError: ``logits`` and ``labels`` disagree in shape; a label outside ``0 .. C - 1`` that is not
            ``ignore_index`` (its position named).
    """
    if logits.dim() != 3 or logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}: expected "
                         "(B, N, C) and (B, N)")
    keep = labels != ignore_index
    num_labels = logits.shape[-1]
    bad = keep & ((labels < 0) | (labels >= num_labels))
    if bad.any():
        row, col = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"labels[{row}, {col}]={int(labels[row, col])} is not a tag id: expected 0 .. "
                         f"{num_labels - 1}, or {ignore_index} for a token without a label")
    count = keep.sum()
    loss = F.cross_entropy(logits[keep].float(), labels[keep], reduction="sum")
    return loss / count.clamp_min(1), count
