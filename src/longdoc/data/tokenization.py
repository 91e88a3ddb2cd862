"""One tokenisation for every document data module (LRA text and retrieval, stdlib packages, text classification).

A data module reads its data set as records (documents: ``bytes`` or ``str``, and labels); a
:class:`DocumentTokenizer` turns one split's documents into a :class:`~longdoc.data.base.TokenSequenceDataset`, cut
to ``max_length`` tokens, in one of three ways:

* bytes (the default): the document's UTF-8 bytes (a ``str`` is encoded), the first ``max_length`` of them, as ids
  ``byte + 2`` after ``<cls>`` with ``add_cls`` (:func:`~longdoc.data.base.byte_values_dataset`);
* a BPE tokenizer trained on the data (``tokenizers.Tokenizer`` with ``<pad>`` = 0 and ``<cls>`` = 1, e.g.
  :func:`~longdoc.data.text_classification.load_or_train_bpe`): its ids, the first ``max_length``, after ``<cls>``
  with ``add_cls``;
* a checkpoint's own tokenizer (:class:`~longdoc.data.pretrained_tokenizer.PretrainedTokenizer`,
  ``data.tokenizer_file``): the first ``max_length`` text tokens inside its template (``[CLS] ... [SEP]``) with
  ``add_cls``.

:class:`DocumentTokenizerMixin` gives a data module with ``max_length``, ``add_cls`` and ``tokenizer_file`` its
tokenizer (:meth:`DocumentTokenizerMixin.document_tokenizer`) and its ``max_seq_len`` bound.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import CLS_ID, TokenSequenceDataset, byte_values_dataset
from .pretrained_tokenizer import PretrainedTokenizer, PretrainedTokenizerMixin

__all__ = ["DocumentTokenizer", "DocumentTokenizerMixin"]


def _as_bytes(document: Any) -> bytes:
    return document.encode("utf-8") if isinstance(document, str) else bytes(document)


@dataclass(frozen=True)
class DocumentTokenizer:
    """Documents -> token ids cut to ``max_length`` (bytes, a trained BPE or a checkpoint's tokenizer; module
    docstring).

    Args:
        max_length: tokens kept per document (before ``<cls>`` / the template's special tokens).
        add_cls: ``<cls>`` first (bytes, BPE), or the pretrained tokenizer's template.
        pretrained: a checkpoint's tokenizer (takes precedence over ``bpe``); None for bytes / BPE.
        bpe: a trained BPE ``tokenizers.Tokenizer``; None for bytes.
    """

    max_length: int
    add_cls: bool = True
    pretrained: PretrainedTokenizer | None = None
    bpe: Any = None

    @property
    def unit(self) -> str:
        """What ``max_length`` counts, for log lines: ``"tokens"``, ``"BPE tokens"`` or ``"bytes"``."""
        return "tokens" if self.pretrained is not None else "BPE tokens" if self.bpe is not None else "bytes"

    @property
    def read_limit(self) -> int | None:
        """Bytes of a document worth reading: ``max_length + 1`` for bytes (one more than is kept, to count the cut
        documents); None (all) for a tokenizer, which needs the whole text."""
        return self.max_length + 1 if self.unit == "bytes" else None

    def encode(self, documents: Sequence[Any]) -> tuple[list[Any], int]:
        """``(token values, number of documents cut)``: bytes for bytes (ids come with
        :meth:`dataset`), ``(L,) int32`` arrays of token ids for a tokenizer (the template's special tokens included)."""
        if self.pretrained is not None:
            return self.pretrained.encode(documents, self.max_length, self.add_cls)
        if self.bpe is not None:
            seqs: list[Any] = [np.asarray(e.ids, dtype=np.int32) for e in self.bpe.encode_batch(list(documents))]
        else:
            seqs = [_as_bytes(d) for d in documents]
        cut = sum(len(s) > self.max_length for s in seqs)
        return [s[: self.max_length] for s in seqs], cut

    def dataset(self, documents: Sequence[Any], labels: Sequence[int] | np.ndarray) -> tuple[TokenSequenceDataset, int]:
        """One split's documents and labels as a :class:`~longdoc.data.base.TokenSequenceDataset`; returns it and
        how many documents were cut to ``max_length``.

        Raises:
            ValueError: documents and labels differ in number, or an empty document without ``add_cls``.
        """
        seqs, cut = self.encode(documents)
        if self.pretrained is not None:  # its ids carry their own special tokens
            return TokenSequenceDataset(seqs, labels, dtype=np.int32), cut
        if self.bpe is not None:
            return TokenSequenceDataset(seqs, labels, prefix=(CLS_ID,) if self.add_cls else (), dtype=np.int32), cut
        return byte_values_dataset(seqs, labels, add_cls=self.add_cls), cut  # bytes are stored as uint8

    def truncation(self, cut: int, total: int, noun: str = "documents") -> str:
        """``"<cut> of <total> <noun> truncated to max_length=<max_length> <unit>"``, for log lines."""
        return f"{cut} of {total} {noun} truncated to max_length={self.max_length} {self.unit}"


class DocumentTokenizerMixin(PretrainedTokenizerMixin):
    """The tokenisation of a document data module (put it first among the bases of a
    :class:`~longdoc.data.base.LongDocDataModule` subclass that sets ``max_length``, ``add_cls`` and
    ``tokenizer_file``): :meth:`document_tokenizer` and the ``max_seq_len`` bound (``max_length`` + ``<cls>`` or the
    template's special tokens)."""

    max_length: int

    def _init_tokenization(self, max_length: int, tokenizer_file: str | os.PathLike | None) -> None:
        """Set ``max_length`` and ``tokenizer_file`` (constructor).

        Raises:
            ValueError: ``max_length <= 0`` (names ``data.max_length``).
        """
        if max_length <= 0:
            raise ValueError(f"max_length must be a positive integer, got {max_length}; set data.max_length > 0")
        self.max_length, self.tokenizer_file = max_length, tokenizer_file

    def _max_seq_len_bound(self) -> int:
        """``max_length`` plus ``<cls>`` (bytes) or the pretrained template's special tokens, with ``add_cls``."""
        return self.token_bound(self.max_length)

    def document_tokenizer(self, bpe: Any = None) -> DocumentTokenizer:
        """The module's :class:`DocumentTokenizer`: ``data.tokenizer_file``'s tokenizer if set, else ``bpe`` (a
        trained BPE tokenizer) if given, else bytes.

        Raises:
            DataNotFoundError, ValueError: an unusable ``data.tokenizer_file`` (see
                :class:`~longdoc.data.pretrained_tokenizer.PretrainedTokenizer`).
        """
        return DocumentTokenizer(self.max_length, bool(getattr(self, "add_cls", True)), self.pretrained_tokenizer,
                                 None if self.pretrained_tokenizer is not None else bpe)
