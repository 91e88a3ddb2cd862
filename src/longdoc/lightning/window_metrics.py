"""Scoring over the windows of long documents (``longdoc.data.windows.collate_windows`` batches): each document
token / each QA example is scored once however its windows were batched or spread over DDP ranks.

* :class:`DocumentSeqevalScores`: seqeval over whole documents rebuilt from their windows' owned tokens.
* :class:`SpanCandidate`, :func:`window_candidates`, :func:`pick_answers`: extractive QA's best answer per example
  over all its windows, from one candidate per window (exact: the best span over all windows is the best of the
  windows' best spans, and the no-answer score is the minimum over windows, :func:`longdoc.models.best_span`).
* :func:`gather_objects`: every rank's Python objects on every rank (``torch.distributed.all_gather_object``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torchmetrics.utilities import dim_zero_cat

from ..models import answer_text, best_span
from .task_metrics import SeqevalScores, seqeval_scores


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class DocumentSeqevalScores(SeqevalScores):
    """:class:`~longdoc.lightning.task_metrics.SeqevalScores` whose sequences are whole documents: the labelled
    tokens of every window of a document, put back in document order, form one sequence (so an entity that two
    windows share is one entity, as on the unwindowed document).

    ``update(preds (B, N) ids | (B, N, C) logits, target (B, N) ids with ignore_index, doc_ids (B,) int = None,
    positions (B, N) int = None)``: ``doc_ids`` names each row's document (``example_index``); ``positions`` each
    column's position in its document. Without ``doc_ids`` every row is its own sequence (as ``SeqevalScores``);
    without ``positions`` the column index orders the tokens. Give a token's label in one window only (the
    ``owned_mask``; ``ignore_index`` elsewhere) or it counts twice. States: kept ids, document keys and positions,
    ``dist_reduce_fx="cat"``: exact under DDP whichever rank saw which window.

    ``compute() -> {"precision", "recall", "f1", "accuracy"}`` float32 tensors in [0, 1].

    Args and errors: those of ``SeqevalScores``; ``update`` also raises ValueError for ``doc_ids`` / ``positions``
    of other shapes.
    """

    def __init__(self, label_names: Sequence[str], mode: str | None = None, ignore_index: int = -100, **kwargs: Any):
        super().__init__(label_names, mode, ignore_index, **kwargs)
        self.add_state("doc_keys", default=[], dist_reduce_fx="cat")
        self.add_state("positions", default=[], dist_reduce_fx="cat")
        self._rows_seen = 0

    def update(self, preds: torch.Tensor, target: torch.Tensor, doc_ids: torch.Tensor | None = None,
               positions: torch.Tensor | None = None) -> None:
        b, n = target.shape if target.dim() == 2 else (0, 0)
        if doc_ids is not None and tuple(doc_ids.shape) != (b,):
            raise ValueError(f"doc_ids {tuple(doc_ids.shape)} must be ({b},): one document id per row")
        if positions is not None and tuple(positions.shape) != (b, n):
            raise ValueError(f"positions {tuple(positions.shape)} must be ({b}, {n}) like the target")
        super().update(preds, target)  # checks the shapes and ids, keeps the labelled tokens
        keep = target != self.ignore_index
        if doc_ids is None:  # every row its own document: (rank, running row number), unique across ranks
            rows = torch.arange(self._rows_seen, self._rows_seen + b, device=target.device)
            keys = torch.stack([torch.full_like(rows, _rank()), rows], -1)
        else:
            ids = doc_ids.to(target.device).long()
            keys = torch.stack([torch.full_like(ids, -1), ids], -1)
        self._rows_seen += b
        pos = torch.arange(n, device=target.device).expand(b, n) if positions is None else positions.long()
        self.doc_keys.append(keys[:, None, :].expand(b, n, 2)[keep])
        self.positions.append(pos.to(target.device)[keep])

    def reset(self) -> None:
        super().reset()
        self._rows_seen = 0

    def compute(self) -> dict[str, torch.Tensor]:
        if isinstance(self.lengths, list) and not self.lengths:
            scores = seqeval_scores([], [], self.mode)
        else:
            keys = dim_zero_cat(self.doc_keys).cpu().numpy().reshape(-1, 2)
            pos = dim_zero_cat(self.positions).cpu().numpy()
            preds = dim_zero_cat(self.pred_ids).cpu().numpy()
            target = dim_zero_cat(self.target_ids).cpu().numpy()
            order = np.lexsort((pos, keys[:, 1], keys[:, 0]))
            keys, preds, target = keys[order], preds[order], target[order]
            starts = np.flatnonzero(np.r_[True, (keys[1:] != keys[:-1]).any(1)]).tolist() + [len(keys)]
            names = self.label_names
            true_tags = [[names[i] for i in target[a:z]] for a, z in zip(starts, starts[1:])]
            pred_tags = [[names[i] for i in preds[a:z]] for a, z in zip(starts, starts[1:])]
            scores = seqeval_scores(true_tags, pred_tags, self.mode)
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in scores.items()}


@dataclass(frozen=True)
class SpanCandidate:
    """The best answer of one window of a QA example.

    Attributes:
        example: the example's key (``example_index``, else ``example_id``). window: the window's index in the
            example (``window_index``: ties between windows go to the smaller). score: ``start + end`` logit of the
            window's best valid span (``-inf`` when it has none). null_score: ``start[CLS] + end[CLS]`` of the
            window. text: the span's text in the context ("" when none). golds: the example's gold answers.
    """

    example: Any
    window: int
    score: float
    null_score: float
    text: str
    golds: tuple[str, ...]


def gold_texts(answers: Any, where: str = "answers") -> tuple[str, ...]:
    """The gold answer strings of one example: a list of strings, or SQuAD's ``{"text": [...], ...}`` dict; None or
    an empty list means unanswerable.

    Raises:
        ValueError: a single string or another type (names ``where``).
    """
    if answers is None:
        return ()
    if isinstance(answers, Mapping):
        answers = answers.get("text", [])
    if isinstance(answers, str) or not isinstance(answers, Sequence):
        raise ValueError(f"{where}={answers!r}: give the list of gold answer strings (or SQuAD's {{'text': [...]}} "
                         "dict), [] for an unanswerable question")
    return tuple(str(a) for a in answers)


def window_candidates(batch: Mapping[str, Any], start_logits: torch.Tensor, end_logits: torch.Tensor, *,
                      max_answer_tokens: int = 30, ignore_index: int = -100,
                      first_window: int = 0) -> list[SpanCandidate]:
    """One :class:`SpanCandidate` per window of a QA batch (:func:`longdoc.models.best_span` on that window alone,
    CLS at position 0), skipping windows whose ``start_positions`` is ``ignore_index`` (repeated to even out DDP
    shards).

    Args:
        batch: ``collate_windows`` keys ``context_mask`` (B, N) bool and ``offsets`` (B lists of (start, end) or
            None), plus per row ``context`` (the example's context string) and ``answers`` (its gold answers, see
            :func:`gold_texts`), as Python lists of B; ``example_index`` (B,) or ``example_id`` (list) and
            ``window_index`` (B,) (default: the row's position plus ``first_window``).
        start_logits, end_logits: (B, N) (masked or not).
        max_answer_tokens: the longest answer in tokens.

    Raises:
        KeyError: a batch without ``context_mask``, ``offsets``, ``context`` or ``answers`` (naming the key).
        ValueError: offsets that do not fit the context (from :func:`longdoc.models.answer_text`), bad answers.
    """
    for key in ("context_mask", "offsets", "context", "answers"):
        if key not in batch:
            raise KeyError(f"a qa batch needs {key!r} (collate_windows' {key} per window; context / answers: the "
                           "example's context string and gold answers as Python lists of B)")
    b = start_logits.shape[0]
    if "example_index" in batch:
        examples = [int(i) for i in torch.as_tensor(batch["example_index"]).tolist()]
    elif "example_id" in batch:
        examples = list(batch["example_id"])
    else:
        raise KeyError("a qa batch needs 'example_index' or 'example_id' to put each example's windows together")
    windows = (torch.as_tensor(batch["window_index"]).tolist() if "window_index" in batch
               else list(range(first_window, first_window + b)))
    real = (torch.ones(b, dtype=torch.bool) if "start_positions" not in batch
            else torch.as_tensor(batch["start_positions"]).cpu() != ignore_index)
    start, end = start_logits.detach().float().cpu(), end_logits.detach().float().cpu()
    mask = torch.as_tensor(batch["context_mask"]).cpu()
    out = []
    for i in range(b):
        if not bool(real[i]):
            continue
        pred = best_span(start[i], end[i], mask[i], max_answer_tokens=max_answer_tokens, cls_index=0)
        # the window's own best span, whatever its null score: the example's null decision is pick_answers'
        text = "" if pred.window is None else answer_text(batch["context"][i], [batch["offsets"][i]],
                                                          replace(pred, is_null=False))
        out.append(SpanCandidate(examples[i], int(windows[i]), pred.score, float(pred.null_score), text,
                                 gold_texts(batch["answers"][i], f"answers[{i}]")))
    return out


def pick_answers(candidates: Sequence[SpanCandidate], *, no_answer: bool = True,
                 null_threshold: float = 0.0) -> dict[Any, tuple[str, tuple[str, ...]]]:
    """Each example's answer from its windows' candidates, as :func:`longdoc.models.best_span` over all its
    windows: the highest ``score`` (ties: the smallest window); with ``no_answer`` the answer is "" when
    ``min(null_score) - score > null_threshold`` or no window has a span; without, "" only when no window has one.

    Returns:
        ``{example: (predicted text, gold answers)}``, examples in the order of their first candidate.
    """
    by_example: dict[Any, list[SpanCandidate]] = {}
    for c in candidates:
        by_example.setdefault(c.example, []).append(c)
    out = {}
    for example, cands in by_example.items():
        best = min(cands, key=lambda c: (-c.score, c.window))
        null = min(c.null_score for c in cands)
        empty = best.score == -math.inf or (no_answer and null - best.score > float(null_threshold))
        out[example] = ("" if empty else best.text, best.golds)
    return out


def gather_objects(items: list[Any]) -> list[Any]:
    """``items`` of every rank concatenated in rank order (``torch.distributed.all_gather_object``); ``items`` itself
    in a single process. Every rank must call it."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(items)
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(items))
    return [x for part in gathered for x in part]
