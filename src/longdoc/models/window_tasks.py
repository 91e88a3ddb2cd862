"""Encoder + head models of the long-document tasks: multi-label classification, token classification and
extractive question answering (Longformer, Beltagy et al. 2020, section 6.1; the heads and losses of
:mod:`.multilabel`, :mod:`.token_classification` and :mod:`.qa`)."""

from __future__ import annotations

from torch import nn

from .encoder import Encoder
from .multilabel import MultiLabelHead, check_threshold
from .qa import QuestionAnsweringHead
from .token_classification import TokenClassificationHead


class MultiLabelClassifier(nn.Module):
    """:class:`Encoder` followed by :class:`~longdoc.models.MultiLabelHead` (pooled, like
    :class:`~longdoc.models.SequenceClassifier`): one independent binary decision per label.

    Args:
        num_labels: L (>= 1). pooling: 'cls' | 'mean'. head_dropout: head dropout (default: ``dropout``).
        threshold: label l is predicted when ``sigmoid(logit_l) > threshold`` (``model.threshold``, 0.5; kept as
            ``self.threshold`` for the metrics).
        **encoder_kwargs: everything :class:`Encoder` takes.

    ``forward(input_ids (B, N), padding_mask (B, N) bool = None, global_attention_mask (B, N) bool = None) -> (B, L)``
    logits.

    Raises:
        ValueError: ``num_labels < 1``; ``threshold`` outside [0, 1) (names ``threshold``); invalid encoder / head
            settings (key named).
    """

    def __init__(self, num_labels: int, pooling: str = "cls", head_dropout: float | None = None,
                 threshold: float = 0.5, **encoder_kwargs):
        super().__init__()
        self.threshold = check_threshold(threshold)
        self.encoder = Encoder(**encoder_kwargs)
        drop = encoder_kwargs.get("dropout", 0.1) if head_dropout is None else head_dropout
        self.head = MultiLabelHead(encoder_kwargs["d_model"], num_labels, pooling, drop)

    def forward(self, input_ids, padding_mask=None, global_attention_mask=None):
        return self.head(self.encoder(input_ids, padding_mask, global_attention_mask), padding_mask)


class TokenClassifier(nn.Module):
    """:class:`Encoder` followed by :class:`~longdoc.models.TokenClassificationHead` on every position (HF's
    ``LongformerForTokenClassification``).

    Args:
        num_labels: C, the number of tags (>= 1). head_dropout: dropout on the hidden states (default: ``dropout``).
        **encoder_kwargs: everything :class:`Encoder` takes.

    ``forward(input_ids (B, N), padding_mask = None, global_attention_mask = None) -> (B, N, C)`` logits.

    Raises:
        ValueError: ``num_labels < 1``; invalid encoder settings (key named).
    """

    def __init__(self, num_labels: int, head_dropout: float | None = None, **encoder_kwargs):
        super().__init__()
        self.encoder = Encoder(**encoder_kwargs)
        drop = encoder_kwargs.get("dropout", 0.1) if head_dropout is None else head_dropout
        self.head = TokenClassificationHead(encoder_kwargs["d_model"], num_labels, drop)

    def forward(self, input_ids, padding_mask=None, global_attention_mask=None):
        return self.head(self.encoder(input_ids, padding_mask, global_attention_mask))


class QuestionAnsweringModel(nn.Module):
    """:class:`Encoder` followed by :class:`~longdoc.models.QuestionAnsweringHead` (HF's
    ``LongformerForQuestionAnswering``): start / end logits over the tokens of each window; the encoder gets the
    batch's ``global_attention_mask`` (CLS and the question tokens).

    Args:
        **encoder_kwargs: everything :class:`Encoder` takes.

    ``forward(input_ids (B, N), padding_mask = None, global_attention_mask = None, context_mask (B, N) bool = None)
    -> (start_logits, end_logits)``, (B, N) each; with a ``context_mask`` every position outside the context except
    CLS (position 0, "no answer") is ``torch.finfo(dtype).min`` (:func:`~longdoc.models.mask_logits`).

    Raises:
        ValueError: invalid encoder settings (key named); from the head, a non-bool or misshapen ``context_mask``.
    """

    def __init__(self, **encoder_kwargs):
        super().__init__()
        self.encoder = Encoder(**encoder_kwargs)
        self.head = QuestionAnsweringHead(encoder_kwargs["d_model"])

    def forward(self, input_ids, padding_mask=None, global_attention_mask=None, context_mask=None):
        return self.head(self.encoder(input_ids, padding_mask, global_attention_mask), context_mask, 0)
