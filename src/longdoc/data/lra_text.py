"""Long Range Arena "Text": byte-level IMDB sentiment classification (Tay et al. 2021, section 3.2).

Each review is classified as negative (0) or positive (1) from its UTF-8 bytes, truncated to
``max_length`` bytes, as LRA's ``lra_benchmarks/text_classification/input_pipeline.py`` does
(``tfds.deprecated.text.ByteTextEncoder``, then ``[:max_length]``; LRA's configs use 1000, the paper
reports up to 4K). Token ids: ``0`` pad, ``1`` CLS, byte ``b`` -> ``b + 2`` (see
:mod:`longdoc.data.base`).

Sources (first that applies):

* ``path`` = a folder in the layout of the original archive ``aclImdb_v1.tar.gz``
  (https://ai.stanford.edu/~amaas/data/sentiment/): ``train/pos/*.txt``, ``train/neg/*.txt``,
  ``test/pos/*.txt``, ``test/neg/*.txt`` (``path`` may also be the folder containing ``aclImdb/``;
  ``train/unsup`` is ignored);
* ``path`` = a folder with ``train.<ext>`` and ``test.<ext>`` tables (``.csv``, ``.tsv``,
  ``.jsonl``/``.json``, ``.parquet``) with columns ``text`` and ``label`` (labels ``0``/``1``,
  ``neg``/``pos`` or ``negative``/``positive``);
* ``path=null``: the Hugging Face dataset ``hf_name`` (``imdb``: splits ``train``/``test``,
  columns ``text``/``label``), which needs the hub or a populated HF cache.

``tokenizer_file`` (a pretrained ``tokenizer.json`` or its checkpoint directory; ``model=pretrained`` sets it)
encodes the reviews with that tokenizer instead of bytes (:mod:`longdoc.data.pretrained_tokenizer`): ``max_length``
then counts its tokens, and its template (``[CLS] ... [SEP]``) replaces ``<cls>``.

Validation: LRA validates on the IMDB test set (it has no validation split). We carve a seeded
``val_fraction`` of the training reviews instead (:func:`~longdoc.data.base.carve_validation`,
``numpy.random.default_rng(seed).permutation``); ``val_fraction=0`` reproduces LRA (validation =
test).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .base import (
    DataNotFoundError,
    SourceDataModule,
    TokenSequenceDataset,
    carve_validation_records,
    load_hf_dataset,
    read_table,
    table_row_lines,
)
from .tokenization import DocumentTokenizerMixin

logger = logging.getLogger("longdoc.data")

__all__ = ["IMDB_HINT", "LRATextDataModule", "imdb_label", "load_imdb", "read_aclimdb", "truncate_bytes"]

#: Where the IMDB data come from (used in error messages).
IMDB_HINT = (
    "a folder in the aclImdb layout (train/pos/*.txt, train/neg/*.txt, test/pos/*.txt, test/neg/*.txt; "
    "from https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz) or a folder with "
    "train.{csv,tsv,jsonl,parquet} and test.{csv,tsv,jsonl,parquet} with columns text,label"
)
_TABLE_EXTS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
_LABELS = {"0": 0, "1": 1, "neg": 0, "pos": 1, "negative": 0, "positive": 1}

Split = tuple[list[bytes], list[int]]


def imdb_label(value: Any) -> int:
    """Map an IMDB label (``0``/``1``, ``"neg"``/``"pos"``, ``"negative"``/``"positive"``) to 0/1.

    Raises:
        ValueError: any other value (an empty or missing label included).
    """
    if value is None or (isinstance(value, (float, np.floating)) and value != value):
        raise ValueError("missing label; expected 0/1, neg/pos or negative/positive")
    key = str(value).strip().lower()
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        key = str(int(value))
    if key not in _LABELS:
        raise ValueError(f"unknown IMDB label {value!r}; expected 0/1, neg/pos or negative/positive")
    return _LABELS[key]


def _to_bytes(text: Any) -> bytes:
    if isinstance(text, (bytes, bytearray)):
        return bytes(text)
    if text is None or (isinstance(text, float) and text != text):  # an empty CSV cell is NaN (read_table)
        return b""
    return str(text).encode("utf-8")


def _review_order(p: Path) -> tuple[int, str]:
    m = re.match(r"(\d+)_", p.name)
    return (int(m.group(1)) if m else -1, p.name)


def read_aclimdb(root: str | os.PathLike) -> dict[str, Split]:
    """Read the ``aclImdb`` folder layout: ``{"train", "test"} -> (review bytes, labels)``.

    Reviews are read as raw bytes (the files are UTF-8), negatives first, each class ordered by the
    review id in the file name (``<id>_<rating>.txt``).

    Raises:
        DataNotFoundError: a ``<split>/{pos,neg}`` folder is missing or empty.
    """
    root = Path(root)
    out: dict[str, Split] = {}
    for split in ("train", "test"):
        texts: list[bytes] = []
        labels: list[int] = []
        for name, label in (("neg", 0), ("pos", 1)):
            folder = root / split / name
            files = sorted(folder.glob("*.txt"), key=_review_order) if folder.is_dir() else []
            if not files:
                raise DataNotFoundError(f"no reviews in {folder}; data.path must hold {IMDB_HINT}")
            for f in files:
                texts.append(f.read_bytes())
                labels.append(label)
        out[split] = (texts, labels)
    return out


def _read_imdb_tables(root: Path) -> dict[str, Split] | None:
    """``train.<ext>`` / ``test.<ext>`` tables under ``root``; ``None`` if there are none.

    Raises:
        DataNotFoundError: only one of the two tables exists.
        ValueError: a missing column, a malformed JSON line, or a label that is not 0/1, neg/pos, negative/positive
            (empty or missing included); the message names the file and the line (parquet: the row index).
    """
    found = {split: next((root / f"{split}{ext}" for ext in _TABLE_EXTS if (root / f"{split}{ext}").is_file()), None)
             for split in ("train", "test")}
    if all(f is None for f in found.values()):
        return None
    out: dict[str, Split] = {}
    for split, f in found.items():
        if f is None:
            raise DataNotFoundError(f"{root} has no {split}.{{csv,tsv,jsonl,parquet}}; data.path must hold {IMDB_HINT}")
        table = read_table(f)
        for col in ("text", "label"):
            if col not in table:
                raise ValueError(f"{f} has no column '{col}' (columns: {sorted(table)}); IMDB tables need text,label")
        labels = []
        for k, y in enumerate(table["label"]):
            try:
                labels.append(imdb_label(y))
            except ValueError as err:
                lines = table_row_lines(f)
                at = f"line {lines[k]}" if lines is not None and len(lines) == len(table["label"]) else f"row index {k}"
                raise ValueError(f"{f} {at}: {err}; fix that row or delete it (data.path={str(root)!r})") from None
        out[split] = ([_to_bytes(t) for t in table["text"]], labels)
    return out


def load_imdb(path: str | os.PathLike | None, hf_name: str = "imdb", cache_dir: str | os.PathLike | None = None) -> dict[str, Split]:
    """Load IMDB's train and test splits as ``{"train", "test"} -> (review bytes, labels 0/1)``.

    Args:
        path: local folder (aclImdb layout, its parent, or train/test tables); ``None`` = HF hub.
        hf_name: Hugging Face dataset name used when ``path`` is ``None``.
        cache_dir: Hugging Face cache folder (``None``: the HF default).

    Raises:
        DataNotFoundError: ``path`` does not exist / has neither layout, or the hub is unreachable
            (the message names ``data.path``).
    """
    if path is None:
        ds = load_hf_dataset(hf_name, key="data.path", hint=IMDB_HINT,
                             cache_dir=None if cache_dir is None else str(cache_dir))
        return {split: ([_to_bytes(t) for t in ds[split]["text"]], [imdb_label(y) for y in ds[split]["label"]])
                for split in ("train", "test")}
    root = Path(path)
    if not root.is_dir():
        raise DataNotFoundError(f"data.path={str(path)!r} is not a folder; it must hold {IMDB_HINT}")
    for candidate in (root, root / "aclImdb"):
        if (candidate / "train" / "pos").is_dir():
            return read_aclimdb(candidate)
    tables = _read_imdb_tables(root)
    if tables is None:
        raise DataNotFoundError(f"data.path={str(path)!r} has neither layout; it must hold {IMDB_HINT}")
    return tables


def truncate_bytes(texts: list[bytes], max_length: int) -> tuple[list[bytes], int]:
    """Cut every text to its first ``max_length`` bytes; returns (texts, how many were cut)."""
    cut = sum(len(t) > max_length for t in texts)
    return [t[:max_length] for t in texts], cut


class LRATextDataModule(DocumentTokenizerMixin, SourceDataModule):
    """LightningDataModule for LRA Text: byte-level IMDB, 2 classes (Tay et al. 2021, section 3.2).

    Batches: ``input_ids`` LongTensor (B, N) (``<cls>`` then byte + 2), ``padding_mask`` (B, N)
    bool, ``global_attention_mask`` (B, N) bool (True at position 0 with ``add_cls``),
    ``labels`` LongTensor (B,) (0 = negative, 1 = positive). ``N <= max_length + add_cls``.

    Args:
        path: local data (see the module docstring); ``None`` loads ``hf_name`` from the HF hub.
        hf_name: Hugging Face dataset name (``imdb``).
        cache_dir: Hugging Face cache folder for ``hf_name`` (``None``: HF's default).
        max_length: bytes kept per review (> 0; default 4000, LRA: 1000-4000); the number of
            truncated reviews is logged.
        val_fraction: fraction of the training reviews held out for validation (seeded); ``0``
            validates on the test set as LRA does.
        seed: seed of the validation split and of the batch shuffling.
        tokenizer_file: a pretrained ``tokenizer.json`` (or its directory) instead of bytes; None = bytes.
        batch_size, max_tokens_per_batch, num_workers, bucket_by_length, add_cls: see
            :class:`~longdoc.data.base.LongDocDataModule`.

    Raises:
        ValueError: ``max_length <= 0``, ``val_fraction`` outside [0, 1), invalid batching args.
        DataNotFoundError: (``prepare_data`` / ``setup``) missing data; names ``data.path``.
    """

    display_name = "LRA text (IMDB)"

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        hf_name: str = "imdb",
        cache_dir: str | os.PathLike | None = None,
        max_length: int = 4000,
        val_fraction: float = 0.1,
        seed: int = 0,
        batch_size: int = 32,
        max_tokens_per_batch: int | None = None,
        num_workers: int = 0,
        bucket_by_length: bool = True,
        add_cls: bool = True,
        tokenizer_file: str | os.PathLike | None = None,
    ):
        super().__init__(batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch, num_workers=num_workers,
                         bucket_by_length=bucket_by_length, add_cls=add_cls, seed=seed)
        self._init_tokenization(max_length, tokenizer_file)
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}; set data.val_fraction")
        self.save_hyperparameters(logger=False)
        self.path, self.hf_name, self.cache_dir = path, hf_name, cache_dir
        self.val_fraction = val_fraction

    @property
    def num_classes(self) -> int:
        """2 (negative, positive)."""
        return 2

    def _read_source(self) -> dict[str, Split]:
        return load_imdb(self.path, self.hf_name, self.cache_dir)

    def _build_datasets(self) -> dict[str, TokenSequenceDataset]:
        raw = self._load()
        if self.val_fraction > 0:
            train, val = carve_validation_records(raw["train"], self.val_fraction, self.seed)
            splits = {"train": train, "val": val, "test": raw["test"]}
        else:
            logger.info("%s: val_fraction=0, validating on the test set (as LRA)", self.display_name)
            splits = {"train": raw["train"], "val": raw["test"], "test": raw["test"]}
        tokenizer = self.document_tokenizer()
        out = {}
        for split, (texts, labels) in splits.items():
            out[split], cut = tokenizer.dataset(texts, labels)
            logger.info("%s %s: %s", self.display_name, split, tokenizer.truncation(cut, len(texts), "reviews"))
        self._raw = None  # the datasets hold the (truncated) bytes now
        return out
