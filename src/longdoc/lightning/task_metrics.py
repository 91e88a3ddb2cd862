"""Metrics and baselines of the long-document tasks (Longformer, Beltagy et al. 2020, section 6.1), as
torchmetrics ``Metric`` objects that accumulate over batches and stay correct under DDP:

* Multi-label classification: micro and macro F1 at a probability threshold
  (:func:`multilabel_f1_metrics`, torchmetrics' ``MultilabelF1Score`` fed ``sigmoid(logits)``) and the
  "most frequent label set" baseline (:func:`most_frequent_label_set`, :func:`label_set_baseline_f1`).
* Token classification (BIO / IOB2 tags): token accuracy and seqeval's entity-level precision / recall / F1
  (:class:`SeqevalScores`, :func:`seqeval_scores`; HF ``run_ner.py`` reports the same), the BIO check
  (:func:`check_bio`, :func:`check_bio_label_names`) and the "every token its most frequent tag" baseline
  (:class:`MostFrequentTagBaseline`).
* Extractive QA: the official SQuAD v1.1 / v2.0 evaluation (:func:`normalize_answer`, :func:`squad_exact_match`,
  :func:`squad_f1`, :func:`squad_scores`) and its accumulator :class:`SquadScores` (percent, as the script).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import torch
from seqeval import metrics as seqeval_metrics
from seqeval.scheme import IOB2
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MultilabelF1Score
from torchmetrics.functional.classification import multilabel_f1_score
from torchmetrics.utilities import dim_zero_cat

from ..models.multilabel import check_threshold

#: seqeval's modes: None = its default, conlleval's lenient chunking (an ``I-X`` after ``O`` starts an entity; what
#: HF ``run_ner.py`` / ``evaluate.load("seqeval")`` report), 'strict' = IOB2 strictly (such an entity is not one).
SEQEVAL_MODES = (None, "strict")


# ---------------------------------------------------------------------------------------------- multi-label


class MultilabelF1FromLogits(MultilabelF1Score):
    """torchmetrics' ``MultilabelF1Score`` that takes logits: ``update(logits (B, L) float, target (B, L) int)``
    applies ``sigmoid`` itself, so label l counts as predicted when ``sigmoid(logit) > threshold`` whatever the
    logits' range (torchmetrics applies the sigmoid only when some value lies outside [0, 1], so logits that all
    happen to lie in [0, 1] would otherwise be read as probabilities).

    Args and errors: those of ``MultilabelF1Score`` (``num_labels``, ``threshold``, ``average``, ``ignore_index``:
    target entries equal to it count nowhere). States are sums of counts: exact under DDP.
    """

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(torch.sigmoid(preds.float()), target)


def multilabel_f1_metrics(num_labels: int, threshold: float = 0.5, ignore_index: int | None = -100
                          ) -> MetricCollection:
    """Micro and macro F1 of multi-label predictions ``sigmoid(logits) > threshold``.

    ``f1_micro`` pools the true / false positives and false negatives of every (document, label) decision;
    ``f1_macro`` is the unweighted mean of the per-label F1s over all ``num_labels`` labels (a label never true and
    never predicted scores 0, as scikit-learn's ``f1_score(average='macro')``).

    Args:
        num_labels: L. threshold: a probability in [0, 1). ignore_index: target value that counts nowhere.

    Returns:
        ``MetricCollection`` of :class:`MultilabelF1FromLogits`: ``update(logits (B, L), target (B, L) int)``,
        ``compute() -> {"f1_micro": tensor, "f1_macro": tensor}`` in [0, 1].

    Raises:
        ValueError: ``threshold`` outside [0, 1); ``num_labels < 2`` (torchmetrics' multilabel metrics need 2).
    """
    t = check_threshold(threshold)
    if int(num_labels) < 2:
        raise ValueError(f"num_labels={num_labels}: multi-label F1 needs at least 2 labels (one label is a binary "
                         "task)")
    return MetricCollection({
        f"f1_{avg}": MultilabelF1FromLogits(int(num_labels), threshold=t, average=avg, ignore_index=ignore_index)
        for avg in ("micro", "macro")})


def most_frequent_label_set(train_labels: Any) -> torch.Tensor:
    """The label set that occurs most often among the training documents (the majority baseline of multi-label
    classification: predict it for every document). Ties go to the set seen first.

    Args:
        train_labels: (M, L) multi-hot 0 / 1 (bool, int or float; a tensor, array or nested lists), one row per
            training document.

    Returns:
        (L,) bool, True for the labels of that set.

    Raises:
        ValueError: not (M, L) with M >= 1, or a value other than 0 / 1 (its row and column named).
    """
    labels = torch.as_tensor(train_labels)
    if labels.dim() != 2 or labels.shape[0] == 0:
        raise ValueError(f"train_labels {tuple(labels.shape)} must be (M, L) multi-hot with at least one row")
    bad = (labels != 0) & (labels != 1)
    if bad.any():
        row, col = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"train_labels[{row}, {col}]={labels[row, col].item()}: label sets are multi-hot 0 / 1")
    counts = Counter(tuple(row) for row in labels.bool().tolist())
    return torch.tensor(counts.most_common(1)[0][0], dtype=torch.bool)


def label_set_baseline_f1(label_set: Any, labels: Any, ignore_index: int | None = -100) -> dict[str, float]:
    """Micro and macro F1 (as :func:`multilabel_f1_metrics`) of predicting ``label_set`` for every document of a
    split.

    Args:
        label_set: (L,) bool, e.g. :func:`most_frequent_label_set` of the training split.
        labels: (M, L) 0 / 1 targets of the split (``ignore_index`` entries count nowhere).

    Returns:
        ``{"f1_micro": float, "f1_macro": float}`` in [0, 1].

    Raises:
        ValueError: ``label_set`` and ``labels`` disagree in L, or ``labels`` is not (M, L).
    """
    chosen = torch.as_tensor(label_set).bool()
    target = torch.as_tensor(labels).long()
    if chosen.dim() != 1 or target.dim() != 2 or target.shape[1] != chosen.shape[0]:
        raise ValueError(f"label_set {tuple(chosen.shape)} and labels {tuple(target.shape)} must be (L,) and (M, L)")
    preds = chosen.float().expand_as(target).contiguous()  # probabilities 0 / 1: above any threshold in [0, 1)
    return {f"f1_{avg}": float(multilabel_f1_score(preds, target, chosen.shape[0], average=avg,
                                                   ignore_index=ignore_index))
            for avg in ("micro", "macro")}


# ---------------------------------------------------------------------------------------- token classification


def _bio_parts(tag: str) -> tuple[str, str] | None:
    """('O', '') | ('B', type) | ('I', type), or None when ``tag`` is none of 'O', 'B-<type>', 'I-<type>'."""
    if tag == "O":
        return "O", ""
    if isinstance(tag, str) and len(tag) > 2 and tag[:2] in ("B-", "I-"):
        return tag[0], tag[2:]
    return None


def check_bio_label_names(label_names: Sequence[str]) -> list[str]:
    """Return ``label_names`` (tag id -> name) as a list if each is 'O', 'B-<type>' or 'I-<type>' and none repeats.

    Raises:
        ValueError: an empty list, a malformed or repeated name (its id named).
    """
    names = list(label_names)
    if not names:
        raise ValueError("label_names is empty: give the tag name of every tag id, e.g. ['O', 'B-PER', 'I-PER']")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if _bio_parts(name) is None:
            raise ValueError(f"label_names[{i}]={name!r} is not a BIO tag: use 'O', 'B-<type>' or 'I-<type>'")
        if name in seen:
            raise ValueError(f"label_names[{i}]={name!r} repeats label_names[{seen[name]}]: each tag once")
        seen[name] = i
    return names


def check_bio(tags: Sequence[str], where: str = "tags") -> None:
    """Check that ``tags`` is a valid BIO (IOB2) sequence: every tag is 'O', 'B-<type>' or 'I-<type>', and every
    'I-<type>' follows a 'B-<type>' or 'I-<type>' of the same type.

    Args:
        tags: one sequence of tag names. where: how the message names the sequence (e.g. ``"train.jsonl line 7"``).

    Raises:
        ValueError: the first bad tag, with its position and how to fix it.
    """
    prev = ("O", "")
    for i, tag in enumerate(tags):
        parts = _bio_parts(tag)
        if parts is None:
            raise ValueError(f"{where}: tag {i} is {tag!r}, which is not a BIO tag: use 'O', 'B-<type>' or "
                             "'I-<type>'")
        if parts[0] == "I" and (prev[0] == "O" or prev[1] != parts[1]):
            before = "the start of the sequence" if i == 0 else repr(tags[i - 1])
            raise ValueError(f"{where}: tag {i} is {tag!r} after {before}: in BIO (IOB2) an I-{parts[1]} continues a "
                             f"B-{parts[1]} or I-{parts[1]}; start the entity with B-{parts[1]}")
        prev = parts


def check_seqeval_mode(mode: str | None) -> str | None:
    """Return ``mode`` if it is one of :data:`SEQEVAL_MODES` (None or 'strict').

    Raises:
        ValueError: any other value.
    """
    if mode not in SEQEVAL_MODES:
        raise ValueError(f"mode={mode!r} is unknown: None (seqeval's default, conlleval chunking) or 'strict' "
                         "(IOB2 strictly)")
    return mode


def seqeval_scores(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]],
                   mode: str | None = None) -> dict[str, float]:
    """Entity-level precision, recall and F1 (micro over entity types, ``seqeval.metrics``) and token accuracy.

    An entity is a maximal ``B-X I-X ...`` chunk; a predicted entity is correct only when its type, start and end
    all equal a gold entity's. precision = correct / predicted entities, recall = correct / gold entities,
    F1 = their harmonic mean (0 when a denominator is 0). accuracy = equal tags / tags.

    Args:
        true_tags, pred_tags: one list of tag names per sequence, the same lengths. mode: None (conlleval
            chunking, seqeval's default) or 'strict' (IOB2).

    Returns:
        ``{"precision", "recall", "f1", "accuracy"}`` floats in [0, 1] (all 0 without tokens).

    Raises:
        ValueError: a different number of sequences or a sequence of another length (its index named); unknown
            ``mode``.
    """
    check_seqeval_mode(mode)
    if len(true_tags) != len(pred_tags):
        raise ValueError(f"{len(true_tags)} gold sequences but {len(pred_tags)} predicted ones")
    for i, (t, p) in enumerate(zip(true_tags, pred_tags)):
        if len(t) != len(p):
            raise ValueError(f"sequence {i}: {len(t)} gold tags but {len(p)} predicted ones")
    true_tags, pred_tags = [list(t) for t in true_tags], [list(p) for p in pred_tags]
    n_tokens = sum(len(t) for t in true_tags)
    if n_tokens == 0:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 0.0}
    opts: dict[str, Any] = {"zero_division": 0}
    if mode == "strict":
        opts.update(mode="strict", scheme=IOB2)
    same = sum(a == b for t, p in zip(true_tags, pred_tags) for a, b in zip(t, p))
    return {"precision": float(seqeval_metrics.precision_score(true_tags, pred_tags, **opts)),
            "recall": float(seqeval_metrics.recall_score(true_tags, pred_tags, **opts)),
            "f1": float(seqeval_metrics.f1_score(true_tags, pred_tags, **opts)),
            "accuracy": same / n_tokens}


class SeqevalScores(Metric):
    """Token accuracy and seqeval's entity precision / recall / F1 (:func:`seqeval_scores`) over every labelled token
    seen since the last reset.

    ``update(preds, target)``: ``preds`` (B, N) tag ids or (B, N, C) logits (argmax taken), ``target`` (B, N) tag
    ids with ``ignore_index`` on tokens without a label; each row's labelled tokens, in order, form one sequence
    (HF ``run_ner.py``'s rule; a row without any is skipped). States: the kept predicted and gold ids and the row
    lengths, list states with ``dist_reduce_fx="cat"`` (the three concatenate in the same rank order, so the
    sequences survive a DDP gather); names are decoded in ``compute``.

    ``compute() -> {"precision", "recall", "f1", "accuracy"}`` float32 tensors in [0, 1].

    Args:
        label_names: tag id -> BIO tag name. mode: None (seqeval's default) or 'strict'.
        ignore_index: label of unlabelled tokens. **kwargs: torchmetrics ``Metric`` options.

    Raises:
        ValueError: bad ``label_names`` (:func:`check_bio_label_names`) or ``mode``; in ``update``: shapes that do
            not fit, or an id outside ``0 .. C - 1`` (its position named).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, label_names: Sequence[str], mode: str | None = None, ignore_index: int = -100,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.label_names = check_bio_label_names(label_names)
        self.mode = check_seqeval_mode(mode)
        self.ignore_index = int(ignore_index)
        self.add_state("pred_ids", default=[], dist_reduce_fx="cat")
        self.add_state("target_ids", default=[], dist_reduce_fx="cat")
        self.add_state("lengths", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.dim() == target.dim() + 1:
            preds = preds.argmax(-1)
        if target.dim() != 2 or preds.shape != target.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must be (B, N) tag ids "
                             "(preds may be (B, N, C) logits)")
        keep = target != self.ignore_index
        n = len(self.label_names)
        for name, ids in (("target", target), ("preds", preds)):
            bad = keep & ((ids < 0) | (ids >= n))
            if bad.any():
                row, col = (int(i) for i in bad.nonzero()[0])
                raise ValueError(f"{name}[{row}, {col}]={int(ids[row, col])} is not a tag id: label_names has {n} "
                                 f"tags (0 .. {n - 1}); unlabelled tokens are {self.ignore_index}")
        self.pred_ids.append(preds[keep].long())
        self.target_ids.append(target[keep].long())
        self.lengths.append(keep.sum(1).long())

    def compute(self) -> dict[str, torch.Tensor]:
        if isinstance(self.lengths, list) and not self.lengths:
            scores = seqeval_scores([], [], self.mode)
        else:
            names = self.label_names
            lengths = [n for n in dim_zero_cat(self.lengths).tolist() if n > 0]
            preds = dim_zero_cat(self.pred_ids).tolist()
            target = dim_zero_cat(self.target_ids).tolist()
            true_tags, pred_tags, at = [], [], 0
            for n in lengths:
                true_tags.append([names[i] for i in target[at:at + n]])
                pred_tags.append([names[i] for i in preds[at:at + n]])
                at += n
            scores = seqeval_scores(true_tags, pred_tags, self.mode)
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in scores.items()}


class MostFrequentTagBaseline:
    """The "every token its most frequent tag" baseline of token classification: each token (word) gets the tag
    it carries most often in the training data (ties: the tag seen first); a token never seen in training gets
    the most frequent tag overall (``default``, usually 'O').

    Build it with :meth:`fit`; :meth:`predict` tags one sequence, :meth:`score` a whole split.

    Args:
        tag_of: token -> tag. default: the tag of unseen tokens.
    """

    def __init__(self, tag_of: Mapping[Hashable, str], default: str):
        self.tag_of = dict(tag_of)
        self.default = default

    @classmethod
    def fit(cls, tokens: Iterable[Sequence[Hashable]], tags: Iterable[Sequence[str]]) -> MostFrequentTagBaseline:
        """The baseline of a training split.

        Args:
            tokens: one sequence of tokens (words or ids) per training example. tags: their tag names.

        Raises:
            ValueError: a sequence whose tokens and tags differ in length (its index named), or no token at all.
        """
        per_token: dict[Hashable, Counter] = {}
        overall: Counter = Counter()
        for i, (toks, tgs) in enumerate(zip(tokens, tags, strict=True)):
            if len(toks) != len(tgs):
                raise ValueError(f"training sequence {i} has {len(toks)} tokens but {len(tgs)} tags")
            for tok, tag in zip(toks, tgs):
                per_token.setdefault(tok, Counter())[tag] += 1
                overall[tag] += 1
        if not overall:
            raise ValueError("the training data has no tagged token: the baseline needs at least one")
        return cls({tok: c.most_common(1)[0][0] for tok, c in per_token.items()}, overall.most_common(1)[0][0])

    def predict(self, tokens: Sequence[Hashable]) -> list[str]:
        """The baseline's tags of one sequence of tokens."""
        return [self.tag_of.get(tok, self.default) for tok in tokens]

    def score(self, tokens: Sequence[Sequence[Hashable]], tags: Sequence[Sequence[str]],
              mode: str | None = None) -> dict[str, float]:
        """:func:`seqeval_scores` of the baseline's tags against ``tags`` on a split (one token sequence per
        example).

        Raises:
            ValueError: from :func:`seqeval_scores` (lengths that differ, unknown ``mode``).
        """
        if len(tokens) != len(tags):
            raise ValueError(f"{len(tokens)} token sequences but {len(tags)} tag sequences")
        return seqeval_scores(tags, [self.predict(t) for t in tokens], mode)


# ------------------------------------------------------------------------------------------------------ SQuAD

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation (the official v1.1 / v2.0 evaluation scripts): lower-case, remove ASCII
    punctuation, remove the articles a / an / the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact_match(prediction: str, gold: str) -> int:
    """1 if the normalised strings are equal, else 0 (the official ``compute_exact``)."""
    return int(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    """Token F1 of the normalised answers, tokens counted with multiplicity (the official v2.0 ``compute_f1``):
    ``2 P R / (P + R)`` with P = common / predicted tokens, R = common / gold tokens; when either has no token,
    1.0 if both have none, else 0.0."""
    pred_toks, gold_toks = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_toks or not gold_toks:
        return float(pred_toks == gold_toks)
    common = sum((Counter(pred_toks) & Counter(gold_toks)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_toks), common / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def squad_scores(prediction: str, golds: Sequence[str]) -> tuple[int, float]:
    """``(exact_match, f1)`` of one question: each the max over its gold answers. As the v2.0 script, gold answers
    that normalise to "" are dropped, and a question with none left (unanswerable) has the one gold answer "".

    Raises:
        ValueError: ``golds`` is a single string rather than a list of answers.
    """
    if isinstance(golds, str):
        raise ValueError(f"golds={golds!r} is one string: give the list of gold answers ([] for an unanswerable "
                         "question)")
    kept = [g for g in golds if normalize_answer(g)] or [""]
    return max(squad_exact_match(prediction, g) for g in kept), max(squad_f1(prediction, g) for g in kept)


class SquadScores(Metric):
    """The official SQuAD v1.1 / v2.0 exact match and F1 over every question seen since the last reset, in
    percent (0 .. 100), as the official scripts print them.

    ``update(predictions: list[str], golds: list[list[str]])``: one predicted answer ("" = no answer) and one list
    of gold answers ([] = unanswerable) per question (:func:`squad_scores`). States: sums of the per-question
    scores and the question count (``dist_reduce_fx="sum"``: exact under DDP).

    ``compute() -> {"exact_match": tensor, "f1": tensor}`` (float64, percent; 0 before any question).

    Raises:
        ValueError: in ``update``, a different number of predictions and gold lists, or a gold list given as a
            single string.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_state("exact_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("f1_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> None:
        if isinstance(predictions, str) or len(predictions) != len(golds):
            raise ValueError(f"predictions and golds must be lists of the same length (one per question), got "
                             f"{type(predictions).__name__} and {len(golds)} gold lists")
        for pred, gold in zip(predictions, golds):
            em, f1 = squad_scores(pred, gold)
            self.exact_sum += em
            self.f1_sum += f1
        self.total += len(predictions)

    def compute(self) -> dict[str, torch.Tensor]:
        total = self.total.clamp_min(1).to(torch.float64)
        return {"exact_match": 100.0 * self.exact_sum / total, "f1": 100.0 * self.f1_sum / total}
