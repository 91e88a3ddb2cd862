"""Building blocks for tasks over documents longer than the model: overlapping windows, token-classification
labels on sub-word or byte tokens, extractive-QA features and their collation.

A document of ``n`` tokens is cut into windows of at most ``window`` tokens, consecutive windows overlapping by
``stride`` tokens (HF ``run_qa.py``'s ``doc_stride`` is this overlap, as in HF ``tokenizers``' overflowing
windows), the last one ending at ``n`` (it may be shorter). When windows overlap, each token is scored once, in its
*owner* window: the one in which it lies farthest from a window edge (BERT's "max context"; ties go to the earlier
window).

* token classification (HF ``run_ner.py``): word-level tags are carried to tokens -- the first token of a word gets
  its word's tag, the others :data:`~longdoc.data.base.IGNORE_INDEX` (or the tag too with
  ``label_all_tokens=True``), special tokens and the separators between words always ``IGNORE_INDEX``; for
  longdoc's byte tokens (``tokenizer: bytes``: one id per UTF-8 byte, ``byte + 2``) a word is its bytes.
* extractive QA (HF ``run_qa.py``, Longformer section 6.1): each window is
  ``prefix question middle context-window suffix`` (BERT ``[CLS] q [SEP] c [SEP]``, RoBERTa
  ``<s> q </s></s> c </s>``, bytes ``<cls> q <sep> c <sep>``: :class:`PairTemplate`), with global attention on the
  prefix and every question token, the gold answer's token positions when it lies wholly in the window (else the
  CLS position 0; SQuAD 2.0's unanswerable questions too) and per-position character offsets into the context
  (None outside it) to turn predicted spans back into text.

Nothing here is wired into a data module yet; the functions are pure (lists / NumPy in, dicts of NumPy arrays out)
apart from :func:`collate_windows`, which builds the batch of tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from .base import CLS_ID, IGNORE_INDEX, PAD_ID, VALUE_OFFSET

__all__ = [
    "PairTemplate",
    "sliding_windows",
    "owner_window",
    "align_word_labels",
    "byte_word_ids",
    "token_classification_features",
    "tag_windows",
    "encode_bytes_with_offsets",
    "encode_with_offsets",
    "answer_token_span",
    "qa_features",
    "collate_windows",
]

#: A character span ``(start, end)`` (end exclusive) into a text.
Offset = tuple[int, int]


# ------------------------------------------------------------------------------------------------
# Windows
# ------------------------------------------------------------------------------------------------
def sliding_windows(n_tokens: int, window: int, stride: int, *, key: str = "data.stride",
                    window_key: str = "data.max_length") -> list[tuple[int, int]]:
    """Token ranges ``[start, end)`` covering ``range(n_tokens)``: windows of ``window`` tokens starting every
    ``window - stride`` tokens, so consecutive windows overlap by exactly ``stride`` tokens; the last one ends at
    ``n_tokens`` and may be shorter. A document that fits (``n_tokens <= window``) is one window; an empty one is
    ``[(0, 0)]`` (one window, so that an example still yields one feature).

    Args:
        n_tokens: tokens of the document (>= 0).
        window: most tokens per window (>= 1).
        stride: overlap of consecutive windows, in tokens (``0 <= stride < window``; HF's ``doc_stride``).
        key: the config key named when ``stride`` is wrong (``data.stride``, ``data.doc_stride``).
        window_key: the config key named when ``window`` is wrong.

    Returns:
        ``[(start, end), ...]`` in document order (python ints).

    Raises:
        ValueError: ``n_tokens < 0``, ``window < 1``, or ``stride`` negative or not smaller than ``window``
            (the message names ``key`` and the largest stride allowed).
    """
    n_tokens, window, stride = int(n_tokens), int(window), int(stride)
    if n_tokens < 0:
        raise ValueError(f"sliding_windows: n_tokens must be >= 0, got {n_tokens}")
    if window < 1:
        raise ValueError(f"{window_key}: a window must hold at least one token, got {window} tokens of room; "
                         f"raise {window_key}")
    if stride < 0 or stride >= window:
        raise ValueError(f"{key}={stride}: the overlap of consecutive windows must be >= 0 and smaller than the "
                         f"window ({window} tokens), so each window moves on by at least one token; set "
                         f"{key} to at most {window - 1} (or raise {window_key})")
    step = window - stride
    out: list[tuple[int, int]] = []
    start = 0
    while True:
        end = min(start + window, n_tokens)
        out.append((start, end))
        if end >= n_tokens:
            return out
        start += step


def owner_window(windows: Sequence[tuple[int, int]], n_tokens: int | None = None) -> np.ndarray:
    """For each token, the index of the window that scores it: the one in which it is farthest from a window
    edge (``min(t - start, end - 1 - t)`` largest; ties: the earlier window), so that overlapping windows score
    every token exactly once.

    Args:
        windows: ``[(start, end), ...]`` (:func:`sliding_windows`).
        n_tokens: tokens of the document (default: the largest ``end``).

    Returns:
        (n_tokens,) int64 array of window indices.

    Raises:
        ValueError: a window with ``start > end`` or outside ``[0, n_tokens]``, or a token in no window.
    """
    n = max((int(e) for _, e in windows), default=0) if n_tokens is None else int(n_tokens)
    best = np.full(n, -1, dtype=np.int64)
    score = np.full(n, -1, dtype=np.int64)
    for w, (s, e) in enumerate(windows):
        s, e = int(s), int(e)
        if not 0 <= s <= e <= n:
            raise ValueError(f"owner_window: window {w} = ({s}, {e}) is not a range inside [0, {n}]")
        t = np.arange(s, e)
        sc = np.minimum(t - s, e - 1 - t)
        better = sc > score[s:e]  # strict: an earlier window keeps a tie
        best[s:e][better] = w
        score[s:e][better] = sc[better]
    if n and (best < 0).any():
        raise ValueError(f"owner_window: token {int(np.argmax(best < 0))} lies in no window")
    return best


# ------------------------------------------------------------------------------------------------
# Token classification
# ------------------------------------------------------------------------------------------------
def align_word_labels(word_ids: Sequence[int | None], word_labels: Sequence[int], *,
                      label_all_tokens: bool = False, b_to_i: Mapping[int, int] | None = None,
                      where: str = "record 0") -> list[int]:
    """Token labels from word labels, as HF ``run_ner.py``'s ``tokenize_and_align_labels``: a token of no word
    (``word_ids`` None: special tokens, separators) gets :data:`~longdoc.data.base.IGNORE_INDEX`; the first token
    of a word its word's label; the following tokens of the same word ``IGNORE_INDEX``, or with
    ``label_all_tokens`` the word's label (mapped through ``b_to_i`` when given, run_ner's ``B-X -> I-X``).

    Args:
        word_ids: per token, the index of its word or None (``tokenizers`` ``Encoding.word_ids``,
            :func:`byte_word_ids`).
        word_labels: one integer label per word.
        label_all_tokens: label every token of a word, not only its first.
        b_to_i: label id -> label id applied to the non-first tokens with ``label_all_tokens``.
        where: the record named in errors (``"record 3"``, ``"train.jsonl line 4"``).

    Returns:
        one label per token (python ints).

    Raises:
        ValueError: a word index outside ``word_labels`` (names ``where``).
    """
    out: list[int] = []
    previous: int | None = None
    for w in word_ids:
        if w is None:
            out.append(IGNORE_INDEX)
        else:
            if not 0 <= w < len(word_labels):
                raise ValueError(f"{where}: a token belongs to word {w} but there are {len(word_labels)} labels; "
                                 "give one label per word")
            label = int(word_labels[w])
            if w != previous:
                out.append(label)
            elif label_all_tokens:
                out.append(int(b_to_i.get(label, label)) if b_to_i is not None else label)
            else:
                out.append(IGNORE_INDEX)
        previous = w
    return out


def byte_word_ids(words: Sequence[str], sep: str = " ") -> tuple[bytes, list[int | None]]:
    """The UTF-8 bytes of ``sep.join(words)`` and, per byte, the index of its word (None for the separators).

    Raises:
        ValueError: an empty word (it would have no byte to carry its label).
    """
    data = bytearray()
    ids: list[int | None] = []
    sep_b = sep.encode("utf-8")
    for i, word in enumerate(words):
        b = str(word).encode("utf-8")
        if not b:
            raise ValueError(f"word {i} is empty: it has no byte to carry its label; drop it or its tag")
        if i:
            data += sep_b
            ids += [None] * len(sep_b)
        data += b
        ids += [i] * len(b)
    return bytes(data), ids


def _plain_tokenizer(tokenizer: Any) -> Any:
    """A copy of a ``tokenizers.Tokenizer`` (or of :class:`PretrainedTokenizer`'s) with truncation and padding off,
    so that the file's stored settings (sentence-transformers: 128 / 512) change nothing."""
    from tokenizers import Tokenizer

    tok = getattr(tokenizer, "tokenizer", tokenizer)
    if tok.padding is None and tok.truncation is None:
        return tok
    copy = Tokenizer.from_str(tok.to_str())
    copy.no_padding()
    copy.no_truncation()
    return copy


def token_classification_features(words: Sequence[str], tags: Sequence[int], tokenizer: Any = None, *,
                                  label_all_tokens: bool = False, b_to_i: Mapping[int, int] | None = None,
                                  where: str = "record 0") -> dict[str, Any]:
    """Token ids and aligned labels of one tagged sentence / document, without special tokens (windows add them:
    :func:`tag_windows`).

    Args:
        words: the words (CoNLL ``tokens``).
        tags: one integer tag per word (CoNLL ``ner_tags``).
        tokenizer: None for longdoc's bytes (``sep.join(words)`` as UTF-8, id ``byte + 2``, separators labelled
            ``IGNORE_INDEX``), or a ``tokenizers.Tokenizer`` /
            :class:`~longdoc.data.pretrained_tokenizer.PretrainedTokenizer`
            (the words encoded pre-tokenised, as run_ner's ``is_split_into_words=True``).
        label_all_tokens, b_to_i: see :func:`align_word_labels`.
        where: the record named in errors (``"train.jsonl line 4"``).

    Returns:
        ``{"input_ids": (L,) int64, "labels": (L,) int64, "word_ids": list of int | None}``.

    Raises:
        ValueError: ``words`` and ``tags`` differ in length, or an empty word with bytes (names ``where``).
    """
    if len(words) != len(tags):
        raise ValueError(f"{where}: {len(words)} tokens but {len(tags)} tags; every token needs exactly one tag")
    if tokenizer is None:
        try:
            data, word_ids = byte_word_ids(words)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        ids = np.frombuffer(data, dtype=np.uint8).astype(np.int64) + VALUE_OFFSET
    else:
        enc = _plain_tokenizer(tokenizer).encode([str(w) for w in words], is_pretokenized=True,
                                                 add_special_tokens=False)
        ids = np.asarray(enc.ids, dtype=np.int64)
        word_ids = list(enc.word_ids)
    labels = align_word_labels(word_ids, tags, label_all_tokens=label_all_tokens, b_to_i=b_to_i, where=where)
    return {"input_ids": ids, "labels": np.asarray(labels, dtype=np.int64), "word_ids": word_ids}


@dataclass(frozen=True)
class PairTemplate:
    """Special tokens around one sequence (``prefix x suffix``) or a pair (``prefix a middle b suffix``), with the
    token type id of each part (BERT: 0 up to the first ``[SEP]``, 1 after it).

    Attributes:
        prefix, middle, suffix: special token ids. prefix_types, middle_types, suffix_types: their token type ids.
        first_type, second_type: the type id of the first (question) and second (context) sequence's tokens.

    Build one with :meth:`bert`, :meth:`roberta`, :meth:`for_bytes` or :meth:`from_tokenizer`.
    """

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...] = ()
    middle_types: tuple[int, ...] = ()
    suffix_types: tuple[int, ...] = ()
    first_type: int = 0
    second_type: int = 0

    def __post_init__(self) -> None:
        for part in ("prefix", "middle", "suffix"):
            ids, types = getattr(self, part), getattr(self, part + "_types")
            object.__setattr__(self, part, tuple(int(i) for i in ids))
            object.__setattr__(self, part + "_types", tuple(int(t) for t in types) if types else (0,) * len(ids))
            if len(getattr(self, part + "_types")) != len(ids):
                raise ValueError(f"PairTemplate: {part} has {len(ids)} ids but {len(types)} type ids")

    @property
    def num_special(self) -> int:
        """Special tokens of a pair (``len(prefix) + len(middle) + len(suffix)``)."""
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    @classmethod
    def bert(cls, cls_id: int, sep_id: int) -> PairTemplate:
        """``[CLS] a [SEP] b [SEP]``, type ids 0 up to the first ``[SEP]``, 1 after."""
        return cls((cls_id,), (sep_id,), (sep_id,), (0,), (0,), (1,), 0, 1)

    @classmethod
    def roberta(cls, bos_id: int, eos_id: int) -> PairTemplate:
        """``<s> a </s></s> b </s>`` (RoBERTa / Longformer), all type ids 0."""
        return cls((bos_id,), (eos_id, eos_id), (eos_id,))

    @classmethod
    def for_bytes(cls, sep_id: int = CLS_ID) -> PairTemplate:
        """longdoc's byte tokens: ``<cls> a <sep> b <sep>`` with ``<sep>`` = ``sep_id``; the default is the ``<cls>``
        id itself (no byte of a text has it and MLM never masks it, so the vocabulary stays 258 ids); type ids 0."""
        return cls((CLS_ID,), (sep_id,), (sep_id,))

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> PairTemplate:
        """The pair template of a ``tokenizers.Tokenizer`` (or :class:`PretrainedTokenizer`): what its
        post-processor puts around, between and after two sequences, with the type ids it gives.

        Raises:
            ValueError: the tokenizer's pair encoding does not have the two sequences in order.
        """
        tok = _plain_tokenizer(tokenizer)
        enc = tok.encode("a", "b", add_special_tokens=True)
        seq = list(enc.sequence_ids)
        first = [i for i, s in enumerate(seq) if s == 0]
        second = [i for i, s in enumerate(seq) if s == 1]
        if not first or not second or first[-1] > second[0]:
            raise ValueError(f"the tokenizer's pair template has no question then context ({enc.tokens}); give a "
                             "PairTemplate explicitly")
        ids, types = list(enc.ids), list(enc.type_ids)
        a, b = slice(0, first[0]), slice(first[-1] + 1, second[0])
        c = slice(second[-1] + 1, len(ids))
        return cls(tuple(ids[a]), tuple(ids[b]), tuple(ids[c]), tuple(types[a]), tuple(types[b]), tuple(types[c]),
                   types[first[0]], types[second[0]])


def tag_windows(input_ids: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray, max_length: int,
                stride: int, template: PairTemplate, *, example_index: int = 0) -> list[dict[str, Any]]:
    """Cut one document's token-classification features (:func:`token_classification_features`) into windows of at
    most ``max_length`` ids each, ``template.prefix + tokens + template.suffix`` (the single-sequence form), the
    windows' tokens overlapping by ``stride`` (:func:`sliding_windows`, key ``data.stride``).

    Returns:
        one dict per window: ``input_ids`` (L,) int64, ``labels`` (L,) int64 (``IGNORE_INDEX`` on special
        tokens), ``global_attention_mask`` (L,) bool (True on the prefix), ``context_mask`` (L,) bool (True on the
        document's tokens), ``owned_mask`` (L,) bool (True where this window is the token's
        :func:`owner_window`: score / predict those only), ``token_start`` (int: the window's first document
        token), ``example_index``, ``window_index``.

    Raises:
        ValueError: ids and labels differ in length, no room for a token, or a bad ``stride``.
    """
    ids = np.asarray(input_ids, dtype=np.int64).reshape(-1)
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(ids) != len(lab):
        raise ValueError(f"example {example_index}: {len(ids)} token ids but {len(lab)} labels")
    pre, suf = np.asarray(template.prefix, dtype=np.int64), np.asarray(template.suffix, dtype=np.int64)
    room = int(max_length) - len(pre) - len(suf)
    windows = sliding_windows(len(ids), room, stride, key="data.stride", window_key="data.max_length")
    owner = owner_window(windows, len(ids))
    out = []
    for w, (s, e) in enumerate(windows):
        n = len(pre) + (e - s) + len(suf)
        ctx = np.zeros(n, dtype=bool)
        ctx[len(pre):len(pre) + e - s] = True
        owned = np.zeros(n, dtype=bool)
        owned[len(pre):len(pre) + e - s] = owner[s:e] == w
        glob = np.zeros(n, dtype=bool)
        glob[:len(pre)] = True
        ignore = np.full(len(pre), IGNORE_INDEX, dtype=np.int64), np.full(len(suf), IGNORE_INDEX, dtype=np.int64)
        out.append({"input_ids": np.concatenate([pre, ids[s:e], suf]),
                    "labels": np.concatenate([ignore[0], lab[s:e], ignore[1]]),
                    "global_attention_mask": glob, "context_mask": ctx, "owned_mask": owned,
                    "token_start": s, "example_index": int(example_index), "window_index": w})
    return out


# ------------------------------------------------------------------------------------------------
# Extractive QA
# ------------------------------------------------------------------------------------------------
def encode_bytes_with_offsets(text: str) -> tuple[np.ndarray, list[Offset]]:
    """longdoc's byte tokens of ``text`` (UTF-8 byte ``b`` -> id ``b + 2``) and each byte's *character* span in
    ``text``: every byte of a multi-byte character (``é`` 2 bytes, ``€`` 3, ``𝄞`` 4) gets that character's
    ``(i, i + 1)``.

    Returns:
        ``(ids, offsets)``: (L,) int64 ids, L = UTF-8 bytes of ``text``; ``offsets`` a list of L ``(start, end)``.
    """
    data = text.encode("utf-8")
    ids = np.frombuffer(data, dtype=np.uint8).astype(np.int64) + VALUE_OFFSET
    widths = [len(ch.encode("utf-8")) for ch in text]
    char_of_byte = np.repeat(np.arange(len(text), dtype=np.int64), widths)
    return ids, [(int(c), int(c) + 1) for c in char_of_byte]


def encode_with_offsets(text: str, tokenizer: Any = None) -> tuple[np.ndarray, list[Offset]]:
    """Token ids of ``text`` without special tokens and each token's character span in ``text``: bytes
    (:func:`encode_bytes_with_offsets`) when ``tokenizer`` is None, else a ``tokenizers.Tokenizer`` /
    :class:`PretrainedTokenizer` (``Encoding.offsets``, character offsets into the Python string)."""
    if tokenizer is None:
        return encode_bytes_with_offsets(text)
    enc = _plain_tokenizer(tokenizer).encode(text, add_special_tokens=False)
    return np.asarray(enc.ids, dtype=np.int64), [(int(a), int(b)) for a, b in enc.offsets]


def _answer_list(answers: Mapping[str, Any] | None, context: str | None, example_id: Any) -> list[tuple[str, int]]:
    """``(text, answer_start)`` pairs of a SQuAD ``answers`` dict, each checked against the context."""
    if not answers:
        return []
    if context is None:
        raise ValueError(f"example {example_id!r}: answers given without the context text; pass context=")
    texts, starts = list(answers.get("text", [])), list(answers.get("answer_start", []))
    if len(texts) != len(starts):
        raise ValueError(f"example {example_id!r}: answers has {len(texts)} texts but {len(starts)} answer_start "
                         "values; give one answer_start (character offset) per answer text")
    out = []
    for text, start in zip(texts, starts):
        text, start = str(text), int(start)
        found = context[start:start + len(text)] if 0 <= start <= len(context) else ""
        if not text or found != text:
            raise ValueError(f"example {example_id!r}: answer_start={start} points at {found!r} in the context, not "
                             f"at the answer text {text!r}; answer_start must be the character offset of the text "
                             "in the context (SQuAD format)")
        out.append((text, start))
    return out


def answer_token_span(offsets: Sequence[Offset | None], char_start: int, char_end: int) -> tuple[int, int] | None:
    """First and last token whose character span overlaps ``[char_start, char_end)`` (tokens without characters
    skipped), or None when none does."""
    hit = [i for i, o in enumerate(offsets) if o is not None and o[0] < o[1] and o[0] < char_end and o[1] > char_start]
    return (hit[0], hit[-1]) if hit else None


def qa_features(question_ids: Sequence[int] | np.ndarray, context_ids: Sequence[int] | np.ndarray,
                context_offsets: Sequence[Offset], answers: Mapping[str, Any] | None, max_length: int,
                doc_stride: int, template: PairTemplate, *, context: str | None = None, example_id: Any = None,
                example_index: int = 0, max_question_length: int | None = None) -> list[dict[str, Any]]:
    """Extractive-QA features of one example, one per context window (HF ``run_qa.py``'s
    ``prepare_train_features`` / ``prepare_validation_features`` in one).

    Each feature is ``prefix question middle context[s:e] suffix`` (:class:`PairTemplate`), at most
    ``max_length`` ids; the context windows overlap by ``doc_stride`` tokens (:func:`sliding_windows`).

    Args:
        question_ids: the question's token ids, no special tokens.
        context_ids: the context's token ids, no special tokens (:func:`encode_with_offsets`).
        context_offsets: each context token's character span in ``context``.
        answers: SQuAD's ``{"text": [...], "answer_start": [...]}``; empty lists or None = unanswerable (SQuAD 2.0).
            The first answer sets the training positions; all are checked against ``context``.
        max_length: most ids per feature, special tokens included (``data.max_length``).
        doc_stride: overlap of consecutive context windows in tokens (``data.doc_stride``).
        template: the special tokens (:meth:`PairTemplate.bert`, :meth:`~PairTemplate.roberta`,
            :meth:`~PairTemplate.for_bytes`, :meth:`~PairTemplate.from_tokenizer`).
        context: the context text (needed when there are answers).
        example_id: the example's id, named in errors and kept in each feature.
        example_index: the example's position in its split, kept in each feature.
        max_question_length: cut the question to this many tokens first (None: never cut).

    Returns:
        one dict per window: ``input_ids`` (L,) int64; ``token_type_ids`` (L,) int64; ``global_attention_mask``
        (L,) bool, True exactly on the prefix (CLS) and the question tokens; ``context_mask`` (L,) bool, True on
        the context tokens; ``owned_mask`` (L,) bool, True on the context tokens this window owns
        (:func:`owner_window`: score each token once); ``offsets``: list of L ``(start, end)`` character spans
        into the context, None outside it; ``start_position`` / ``end_position`` (int): positions of the first /
        last answer token when the answer lies wholly in the window, else 0 (the CLS position) -- also for
        unanswerable examples; ``token_start`` (int: the window's first context token), ``example_id``,
        ``example_index``, ``window_index``.

    Raises:
        ValueError: ids and offsets differ in length; an answer whose ``answer_start`` does not point at its
            ``text`` in ``context`` (names the example id and both strings); an answer covering no token; a
            question leaving no room for context in ``max_length`` (names ``data.max_length``); a bad
            ``doc_stride`` (names ``data.doc_stride``).
    """
    q = np.asarray(question_ids, dtype=np.int64).reshape(-1)
    if max_question_length is not None:
        q = q[: int(max_question_length)]
    c = np.asarray(context_ids, dtype=np.int64).reshape(-1)
    offsets = [(int(a), int(b)) for a, b in context_offsets]
    if len(offsets) != len(c):
        raise ValueError(f"example {example_id!r}: {len(c)} context ids but {len(offsets)} offsets; give one "
                         "character span per context token")
    gold = _answer_list(answers, context, example_id)
    span = None
    if gold:
        text, start = gold[0]
        span = answer_token_span(offsets, start, start + len(text))
        if span is None:
            raise ValueError(f"example {example_id!r}: the answer {text!r} at character {start} covers no context "
                             "token (the tokenizer drops its characters); fix or drop the example")
    t = template
    head = len(t.prefix) + len(q) + len(t.middle)
    room = int(max_length) - head - len(t.suffix)
    if room < 1:
        raise ValueError(f"example {example_id!r}: data.max_length={max_length} leaves no room for context after "
                         f"the question ({len(q)} tokens) and {t.num_special} special tokens; raise data.max_length "
                         "or cut questions with max_question_length")
    windows = sliding_windows(len(c), room, doc_stride, key="data.doc_stride", window_key="data.max_length")
    owner = owner_window(windows, len(c))
    head_ids = np.concatenate([np.asarray(t.prefix, dtype=np.int64), q, np.asarray(t.middle, dtype=np.int64)])
    head_types = np.asarray([*t.prefix_types, *([t.first_type] * len(q)), *t.middle_types], dtype=np.int64)
    out = []
    for w, (s, e) in enumerate(windows):
        n = head + (e - s) + len(t.suffix)
        ctx = np.zeros(n, dtype=bool)
        ctx[head:head + e - s] = True
        owned = np.zeros(n, dtype=bool)
        owned[head:head + e - s] = owner[s:e] == w
        glob = np.zeros(n, dtype=bool)
        glob[:len(t.prefix) + len(q)] = True
        start_pos = end_pos = 0
        if span is not None and s <= span[0] and span[1] < e:
            start_pos, end_pos = head + span[0] - s, head + span[1] - s
        out.append({
            "input_ids": np.concatenate([head_ids, c[s:e], np.asarray(t.suffix, dtype=np.int64)]),
            "token_type_ids": np.concatenate([head_types, np.full(e - s, t.second_type, dtype=np.int64),
                                              np.asarray(t.suffix_types, dtype=np.int64)]),
            "global_attention_mask": glob, "context_mask": ctx, "owned_mask": owned,
            "offsets": [None] * head + offsets[s:e] + [None] * len(t.suffix),
            "start_position": start_pos, "end_position": end_pos, "token_start": s,
            "example_id": example_id, "example_index": int(example_index), "window_index": w,
        })
    return out


# ------------------------------------------------------------------------------------------------
# Collation
# ------------------------------------------------------------------------------------------------
def _pad_rows(rows: Sequence[np.ndarray], value: Any, dtype: torch.dtype) -> torch.Tensor:
    return pad_sequence([torch.as_tensor(np.asarray(r)).to(dtype) for r in rows], batch_first=True,
                        padding_value=value)


def collate_windows(features: Sequence[Mapping[str, Any]], pad_id: int = PAD_ID) -> dict[str, Any]:
    """Pad window features (:func:`qa_features`, :func:`tag_windows`) to the longest one (padding on the right)
    and build the batch dict.

    Args:
        features: the window dicts.
        pad_id: the padding id (the tokenizer's; 0 for bytes).

    Returns:
        ``input_ids`` LongTensor (B, N) padded with ``pad_id``; ``padding_mask`` BoolTensor (B, N) (True = real
        token); ``global_attention_mask``, ``context_mask``, ``owned_mask`` BoolTensor (B, N) (False on padding);
        ``token_type_ids`` LongTensor (B, N) (0 on padding) when the features have them; ``start_positions`` /
        ``end_positions`` LongTensor (B,) for QA features; ``labels`` LongTensor (B, N) padded with
        :data:`~longdoc.data.base.IGNORE_INDEX` for tagging features; ``example_index``, ``window_index``,
        ``token_start`` LongTensor (B,); ``offsets`` (QA: a list of B lists, None outside the context) and
        ``example_id`` (a list of B) as Python lists.

    Raises:
        ValueError: no features, or features of different kinds (some with a key the others lack).
    """
    if not features:
        raise ValueError("collate_windows: empty batch")
    keys = set(features[0])
    for i, f in enumerate(features):
        if set(f) != keys:
            raise ValueError(f"collate_windows: feature {i} has keys {sorted(f)} but feature 0 has {sorted(keys)}; "
                             "batch features of one kind")
    ids = [f["input_ids"] for f in features]
    out: dict[str, Any] = {"input_ids": _pad_rows(ids, pad_id, torch.long),
                           "padding_mask": _pad_rows([np.ones(len(r), dtype=bool) for r in ids], False, torch.bool)}
    for k in ("global_attention_mask", "context_mask", "owned_mask"):
        if k in keys:
            out[k] = _pad_rows([f[k] for f in features], False, torch.bool)
    if "token_type_ids" in keys:
        out["token_type_ids"] = _pad_rows([f["token_type_ids"] for f in features], 0, torch.long)
    if "labels" in keys:
        out["labels"] = _pad_rows([f["labels"] for f in features], IGNORE_INDEX, torch.long)
    for k, name in (("start_position", "start_positions"), ("end_position", "end_positions"),
                    ("example_index", "example_index"), ("window_index", "window_index"),
                    ("token_start", "token_start")):
        if k in keys:
            out[name] = torch.tensor([int(f[k]) for f in features], dtype=torch.long)
    for k in ("offsets", "example_id"):
        if k in keys:
            out[k] = [f[k] for f in features]
    return out
