"""Extractive question answering over long documents (SQuAD v1.1 / v2.0, TriviaQA, WikiHop-style: Longformer,
Beltagy et al. 2020, section 6.1): the start / end head and loss of HuggingFace's
``LongformerForQuestionAnswering`` and the answer decoding of HF ``run_qa.py``
(``utils_qa.postprocess_qa_predictions``), made exact.

A long example (question + context) is cut into windows; each window is ``[CLS] question [SEP] context part``
(the data side builds them and gives a per-window ``context_mask``, True on the context tokens, and per-token
character offsets into the context).

* :class:`QuestionAnsweringHead`: (B, N, D) -> start and end logits, (B, N) each; positions that can never be an
  answer boundary (outside the context, except the CLS position that stands for "no answer") get
  ``torch.finfo(dtype).min``.
* :func:`qa_loss`: ``(CE(start) + CE(end)) / 2``, HF's loss. A window without the answer (or a SQuAD 2.0
  question without one) is labelled with the CLS position, as ``run_qa.py`` does.
* :func:`best_span`: the best answer of one example over ALL its windows, by exhaustive search: ``start <= end``,
  ``end - start + 1 <= max_answer_tokens``, both ends in the window's context, score ``start_logit +
  end_logit``; with a CLS position, the no-answer score ``min over windows (start[CLS] + end[CLS])`` (HF's
  ``min_null_prediction``) wins when it beats the best span by more than ``null_threshold``
  (HF's ``null_score_diff_threshold``). HF keeps only the ``n_best_size`` (20) highest starts and ends of each
  window, so it can miss the best pair; this search cannot.
* :func:`span_char_offsets` / :func:`answer_text`: token span -> character span -> answer string.

SQuAD's official exact match / F1 are in ``longdoc.lightning.task_metrics``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def mask_logits(logits: torch.Tensor, context_mask: torch.Tensor, cls_index: int | None = 0) -> torch.Tensor:
    """``logits`` with every position outside the context set to ``torch.finfo(logits.dtype).min``, except the
    ``cls_index`` position (the "no answer" slot, kept unless ``cls_index`` is None).

    Args:
        logits: (B, N) float. context_mask: (B, N) bool, True on context tokens. cls_index: a position in
            ``0 .. N - 1`` or None.

    Returns:
        (B, N) tensor in ``logits``' dtype (a new tensor; ``logits`` is not changed).

    Raises:
        ValueError: ``context_mask`` not bool or of another shape; ``cls_index`` outside ``0 .. N - 1``.
    """
    if context_mask.dtype != torch.bool:
        raise ValueError(f"context_mask must be a bool tensor (True = context token), got {context_mask.dtype}")
    if context_mask.shape != logits.shape:
        raise ValueError(f"context_mask {tuple(context_mask.shape)} does not match the logits {tuple(logits.shape)}")
    keep = context_mask
    if cls_index is not None:
        if not 0 <= int(cls_index) < logits.shape[-1]:
            raise ValueError(f"cls_index={cls_index} is outside the window's {logits.shape[-1]} positions")
        keep = keep.clone()
        keep[..., int(cls_index)] = True
    return logits.masked_fill(~keep, torch.finfo(logits.dtype).min)


class QuestionAnsweringHead(nn.Module):
    """Linear(D, 2) on every position, split into start and end logits (HF's ``qa_outputs``).

    Args:
        d_model: width D.

    ``forward(hidden (B, N, D), context_mask (B, N) bool = None, cls_index: int | None = 0)
    -> (start_logits, end_logits)``, (B, N) each in ``hidden``'s dtype; with a ``context_mask`` the positions
    outside the context except ``cls_index`` are ``torch.finfo(dtype).min`` (:func:`mask_logits`).

    Raises:
        ValueError: from :func:`mask_logits` (a non-bool or misshapen mask, a bad ``cls_index``).
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.qa_outputs = nn.Linear(d_model, 2)

    def forward(self, hidden: torch.Tensor, context_mask: torch.Tensor | None = None,
                cls_index: int | None = 0) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.qa_outputs(hidden).unbind(-1)
        if context_mask is not None:
            start, end = mask_logits(start, context_mask, cls_index), mask_logits(end, context_mask, cls_index)
        return start, end


def qa_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, start_positions: torch.Tensor,
            end_positions: torch.Tensor, ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """``(CE(start_logits, start_positions) + CE(end_logits, end_positions)) / 2``, each the mean over the windows
    with a target, in float32 (HF's ``LongformerForQuestionAnswering`` loss).

    Unlike HF, which clamps a position outside the window and then ignores it, such a position is an error here:
    the data side labels a window without the answer with the CLS position.

    Args:
        start_logits, end_logits: (B, N) any float dtype (masked or not).
        start_positions, end_positions: (B,) int64 token positions, ``ignore_index`` for a window without a
            target (a sample repeated to even out DDP shards).

    Returns:
        ``(loss, count)``: float32 scalar (0 when no window has a target) and the number of windows with a target
        (int64 scalar tensor).

    Raises:
        ValueError: shapes that do not fit; a position outside ``0 .. N - 1`` or on a masked logit
            (``torch.finfo.min``: outside the context and not CLS), naming the window.
    """
    if start_logits.dim() != 2 or start_logits.shape != end_logits.shape:
        raise ValueError(f"start_logits {tuple(start_logits.shape)} and end_logits {tuple(end_logits.shape)} must "
                         "both be (B, N)")
    b, n = start_logits.shape
    if start_positions.shape != (b,) or end_positions.shape != (b,):
        raise ValueError(f"start_positions {tuple(start_positions.shape)} and end_positions "
                         f"{tuple(end_positions.shape)} must both be ({b},): one position per window")
    keep = (start_positions != ignore_index) & (end_positions != ignore_index)
    total = start_logits.new_zeros((), dtype=torch.float32)
    for name, logits, pos in (("start", start_logits, start_positions), ("end", end_logits, end_positions)):
        bad = keep & ((pos < 0) | (pos >= n))
        if bad.any():
            w = int(bad.nonzero()[0, 0])
            raise ValueError(f"{name}_positions[{w}]={int(pos[w])} is outside the window's positions 0 .. {n - 1}; "
                             f"label a window without the answer with the CLS position, or {ignore_index} for none")
        at = logits.gather(1, pos.clamp(0, n - 1)[:, None])[:, 0]
        masked = keep & (at == torch.finfo(logits.dtype).min)
        if masked.any():
            w = int(masked.nonzero()[0, 0])
            raise ValueError(f"{name}_positions[{w}]={int(pos[w])} points at a masked position (outside the "
                             "context and not CLS): the answer must lie in the window's context part")
        total = total + F.cross_entropy(logits[keep].float(), pos[keep], reduction="sum")
    count = keep.sum()
    return total / 2 / count.clamp_min(1), count


@dataclass(frozen=True)
class SpanPrediction:
    """The answer :func:`best_span` picks for one example.

    Attributes:
        window: index of the window holding the best span (None when no window has a valid span).
        start, end: token positions of the best span inside that window, inclusive (None with ``window``).
        score: ``start_logit + end_logit`` of the best span (``-inf`` when there is none).
        null_score: the no-answer score, ``min`` over windows of ``start[CLS] + end[CLS]`` (None without CLS).
        is_null: True when the answer is "" (no answer): the null score beats ``score`` by more than the
            threshold, or there is no valid span.
    """

    window: int | None
    start: int | None
    end: int | None
    score: float
    null_score: float | None
    is_null: bool


def best_span(start_logits: Any, end_logits: Any, context_mask: Any, *, max_answer_tokens: int = 30,
              cls_index: int | None = 0, null_threshold: float = 0.0) -> SpanPrediction:
    """The highest-scoring answer span of one example over all its windows (exhaustive search, float64 sums).

    A span ``(w, s, e)`` is valid when ``s <= e``, ``e - s + 1 <= max_answer_tokens`` and ``context_mask[w, s]``
    and ``context_mask[w, e]`` are True (the context of a window is contiguous, so the tokens between are too);
    its score is ``start_logits[w, s] + end_logits[w, e]``. Ties go to the smallest ``(w, s, e)``.

    No answer (SQuAD 2.0): with ``cls_index`` set, ``null_score = min_w (start_logits[w, cls] +
    end_logits[w, cls])`` (HF ``run_qa.py``); the answer is "" (``is_null``) when ``null_score - score >
    null_threshold``. ``cls_index=None`` never answers "" (SQuAD 1.1).

    Args:
        start_logits, end_logits: (W, N) floats (tensors or nested lists; (N,) for one window).
        context_mask: (W, N) bool, True on the context tokens of each window.
        max_answer_tokens: the longest answer in tokens (HF's ``max_answer_length``, 30). cls_index: the CLS
            position or None. null_threshold: HF's ``null_score_diff_threshold`` (0.0).

    Returns:
        :class:`SpanPrediction`.

    Raises:
        ValueError: shapes that differ or are not (W, N); a non-bool ``context_mask``; ``max_answer_tokens < 1``;
            ``cls_index`` outside ``0 .. N - 1``; no valid span in any window with ``cls_index=None``.
    """
    start = torch.as_tensor(start_logits).detach().to("cpu", torch.float64)
    end = torch.as_tensor(end_logits).detach().to("cpu", torch.float64)
    mask = torch.as_tensor(context_mask).detach().cpu()
    if mask.dtype != torch.bool:
        raise ValueError(f"context_mask must be bool (True = context token), got {mask.dtype}")
    if start.dim() == 1 and end.dim() == 1 and mask.dim() == 1:  # one window
        start, end, mask = start[None], end[None], mask[None]
    if start.dim() != 2 or start.shape != end.shape or start.shape != mask.shape:
        raise ValueError(f"start_logits {tuple(start.shape)}, end_logits {tuple(end.shape)} and context_mask "
                         f"{tuple(mask.shape)} must all be (W, N): one row per window of the example")
    if int(max_answer_tokens) < 1:
        raise ValueError(f"max_answer_tokens={max_answer_tokens} must be >= 1")
    n_windows, n = start.shape
    if cls_index is not None and not 0 <= int(cls_index) < n:
        raise ValueError(f"cls_index={cls_index} is outside the window's {n} positions")
    span = min(int(max_answer_tokens), n)
    # ends[w, s, k] = end_logits[w, s + k]: every span of length k + 1 starting at s (padded past the window)
    ends = F.pad(end, (0, span - 1), value=-math.inf).unfold(1, span, 1)
    end_ok = F.pad(mask, (0, span - 1), value=False).unfold(1, span, 1)
    scores = (start[:, :, None] + ends).masked_fill(~(mask[:, :, None] & end_ok), -math.inf)
    best = int(scores.flatten().argmax())
    score = float(scores.flatten()[best])
    null_score = None if cls_index is None else float((start[:, int(cls_index)] + end[:, int(cls_index)]).min())
    if score == -math.inf:
        if null_score is None:
            raise ValueError(f"no window has a valid answer span (both ends in the context, at most "
                             f"{max_answer_tokens} tokens): check the context_mask of this example's windows")
        return SpanPrediction(None, None, None, score, null_score, True)
    w, rest = divmod(best, n * span)
    s, k = divmod(rest, span)
    is_null = null_score is not None and null_score - score > float(null_threshold)
    return SpanPrediction(w, s, s + k, score, null_score, is_null)


def span_char_offsets(offsets: Any, start: int, end: int) -> tuple[int, int]:
    """The character span ``[char_start, char_end)`` of the token span ``start .. end`` (inclusive) of one window:
    ``(offsets[start][0], offsets[end][1])``.

    Args:
        offsets: (N, 2) per-token ``(char_start, char_end)`` into the context (a tensor or a list of pairs; the
            pairs of non-context tokens may be None, as HF sets them, and are never read here).
        start, end: token positions, ``start <= end``.

    Raises:
        ValueError: a position outside the offsets, a None / negative offset at ``start`` or ``end``, or
            ``char_end < char_start``.
    """
    if not 0 <= start <= end < len(offsets):
        raise ValueError(f"token span {start} .. {end} is not inside the window's {len(offsets)} offsets")
    first, last = offsets[start], offsets[end]
    if first is None or last is None:
        raise ValueError(f"token {start if first is None else end} has no character offsets (None): it is not a "
                         "context token")
    char_start, char_end = int(first[0]), int(last[1])
    if char_start < 0 or char_end < char_start:
        raise ValueError(f"token span {start} .. {end} maps to characters [{char_start}, {char_end}), which is not a "
                         "span of the context: check the offsets")
    return char_start, char_end


def answer_text(context: str, offsets: Sequence[Any], prediction: SpanPrediction) -> str:
    """The answer string: "" for a null prediction, else ``context[char_start:char_end]`` of the predicted span.

    Args:
        context: the example's context. offsets: per window, (N, 2) ``(char_start, char_end)`` into ``context``
            (``offsets[prediction.window]`` is read). prediction: from :func:`best_span`.

    Raises:
        ValueError: from :func:`span_char_offsets`; a character span past the end of ``context``.
    """
    if prediction.is_null or prediction.window is None:
        return ""
    char_start, char_end = span_char_offsets(offsets[prediction.window], prediction.start, prediction.end)
    if char_end > len(context):
        raise ValueError(f"the answer's characters [{char_start}, {char_end}) run past the context's {len(context)} "
                         "characters: the offsets do not belong to this context")
    return context[char_start:char_end]
