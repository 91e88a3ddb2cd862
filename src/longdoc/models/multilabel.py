"""Multi-label document classification (a document carries any subset of L labels): the head, the loss and the
prediction rule of HuggingFace's ``LongformerForSequenceClassification(problem_type="multi_label_classification")``
(Longformer, Beltagy et al. 2020, section 6.1: Hyperpartisan, IMDB and the multi-label data sets).

* :class:`MultiLabelHead`: pooled encoder output -> (B, L) logits, one independent binary decision per label.
* :func:`multilabel_loss`: binary cross-entropy with logits, the mean over the B x L decisions
  (``torch.nn.BCEWithLogitsLoss()``, which HF uses).
* :func:`multilabel_predict`: label l is predicted when ``sigmoid(logit_l) > threshold`` (0.5 by default).

The metrics (micro / macro F1, the most-frequent-label-set baseline) are in ``longdoc.lightning.task_metrics``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .heads import SequenceClassificationHead


class MultiLabelHead(SequenceClassificationHead):
    """Pool the sequence, then Linear -> tanh -> dropout -> Linear to ``num_labels`` logits (the head of
    :class:`~longdoc.models.SequenceClassificationHead`, like HF's ``LongformerClassificationHead``, which also
    drops out before the first Linear); each logit is an independent binary decision (sigmoid, not softmax).

    Args:
        d_model: width D. num_labels: L (>= 1). pooling: 'cls' | 'mean' (see :func:`~longdoc.models.pool`).
        dropout: before the output layer.

    ``forward(hidden (B, N, D), padding_mask (B, N) bool = None) -> (B, L)`` logits in ``hidden``'s dtype.

    Raises:
        ValueError: ``num_labels < 1``; unknown pooling (``model.pooling``).
    """

    def __init__(self, d_model: int, num_labels: int, pooling: str = "cls", dropout: float = 0.1):
        if int(num_labels) < 1:
            raise ValueError(f"num_labels={num_labels}: a multi-label head needs at least one label")
        super().__init__(d_model, int(num_labels), pooling, dropout)
        self.num_labels = int(num_labels)


def check_threshold(threshold: float) -> float:
    """Return ``threshold`` as a float if it lies in [0, 1) (a probability that ``sigmoid(logit)`` must exceed).

    Raises:
        ValueError: any other value (names ``threshold``).
    """
    t = float(threshold)
    if not 0.0 <= t < 1.0:
        raise ValueError(f"threshold={threshold!r} must be a probability in [0, 1): a label is predicted when "
                         "sigmoid(logit) > threshold (0.5 is the usual choice)")
    return t


def multilabel_loss(logits: torch.Tensor, labels: torch.Tensor,
                    ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary cross-entropy with logits, the mean over every (document, label) decision, computed in float32:
    ``mean(-(y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))))``, as ``torch.nn.BCEWithLogitsLoss()`` (HF's
    multi-label loss).

    Args:
        logits: (B, L) any float dtype.
        labels: (B, L) targets in [0, 1] (bool, int or float; soft targets allowed); entries equal to
            ``ignore_index`` count in no loss (a row of them: a sample repeated to even out DDP shards).
        ignore_index: the value of entries without a target (:data:`longdoc.data.IGNORE_INDEX`).

    Returns:
        ``(loss, count)``: the mean over the entries with a target (float32 scalar; 0 when there are none) and
        their number (int64 scalar tensor), so epoch averages can be weighted.

    Raises:
        ValueError: ``logits`` and ``labels`` differ in shape or are not 2-D; a label outside [0, 1] that is not
            ``ignore_index`` (its row and column named).
    """
    if logits.dim() != 2 or logits.shape != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} must both be (B, L): one "
                         "row per document, one column per label")
    target = labels.float()
    keep = target != ignore_index
    bad = keep & ((target < 0) | (target > 1))
    if bad.any():
        row, col = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"labels[{row}, {col}]={target[row, col].item():g}: multi-label targets are 0 / 1 (or a "
                         f"probability in between), or {ignore_index} for no target")
    count = keep.sum()
    loss = F.binary_cross_entropy_with_logits(logits.float()[keep], target[keep], reduction="sum")
    return loss / count.clamp_min(1), count


def multilabel_predict(logits: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """The predicted label sets: ``sigmoid(logits) > threshold``.

    Args:
        logits: (B, L) any float dtype. threshold: a probability in [0, 1) (default 0.5, i.e. ``logit > 0``).

    Returns:
        (B, L) bool, True for the labels predicted.

    Raises:
        ValueError: ``threshold`` outside [0, 1).
    """
    return torch.sigmoid(logits.float()) > check_threshold(threshold)
