"""Any long-document classification set: Hugging Face hub name or local CSV / JSON lines / parquet.

Sources (one of):

* ``hf_name`` (+ ``hf_config``): ``datasets.load_dataset(hf_name, hf_config)``; splits
  ``hf_train_split`` / ``hf_validation_split`` / ``hf_test_split``; columns ``text_key`` /
  ``label_key``.
* ``train_file`` and ``test_file`` (+ optional ``validation_file``): ``.csv`` / ``.tsv`` (header
  row), ``.jsonl`` / ``.json`` (one object per line) or ``.parquet``, with the columns ``text_key``
  and ``label_key`` (e.g. LRA's own ``lra_benchmarks/data/text_classification.py`` writes arXiv
  CSVs; LRA's ``input_pipeline`` reads ``Source`` / ``Target`` columns).

Without a validation split, a seeded ``val_fraction`` of the training set is held out
(:func:`~longdoc.data.base.carve_validation`).

Empty rows: a row whose label is empty, whitespace-only or missing (an empty CSV cell, JSON ``null`` or no key,
a parquet / HF null) or whose text is empty or whitespace-only is an error that names the file and the rows (CSV /
TSV: the line in the file, the header being line 1; JSON lines: the 1-based line; parquet / HF datasets: the
0-based row index and the split), since an empty label would silently become a class of its own. With
``drop_empty=True`` such rows are dropped instead, and the number dropped per split and reason is logged (logger
``longdoc.data``).

Labels: strings or integers, mapped to ids ``0..K-1``: in the order of ``label_names`` if given,
else sorted (numerically when all labels are integers, else as strings) over the training labels.
A validation / test label outside the mapping is an error.

Tokenisation (``tokenizer``):

* ``bytes`` (as LRA): UTF-8 bytes, ids ``0`` pad, ``1`` CLS, byte ``b`` -> ``b + 2`` (258 ids).
* ``tokenizer_file`` (a ``tokenizer.json`` or a checkpoint directory; ``model=pretrained`` sets it to
  ``model.pretrained.path``): the checkpoint's own tokenizer, with its special tokens
  (:mod:`longdoc.data.pretrained_tokenizer`); it replaces ``bytes`` (and may not go with ``bpe``).
* ``bpe``: a byte-level BPE (Hugging Face ``tokenizers``: ``models.BPE`` with the ``ByteLevel``
  pre-tokenizer and its 256-symbol initial alphabet, as ``ByteLevelBPETokenizer``) trained on the
  training texts with ``bpe_vocab_size`` ids (``<pad>`` = 0, ``<cls>`` = 1). The tokenizer JSON is
  cached in ``cache_dir`` (or, without one, beside ``train_file``) as
  ``bpe-<key>.json``, ``key`` = SHA-256 of the training texts, ``bpe_vocab_size`` and
  ``bpe_min_frequency``, and re-used when present.

Sequences are cut to ``max_length`` tokens (bytes or BPE tokens), then ``<cls>`` is prepended (with
``tokenizer_file``: the tokenizer's template, e.g. ``[CLS] ... [SEP]``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import (
    BYTE_VOCAB_SIZE,
    CLS_ID,
    PAD_ID,
    DataNotFoundError,
    SourceDataModule,
    TokenSequenceDataset,
    atomic_write,
    carve_validation_records,
    load_hf_dataset,
    read_table,
    table_row_lines,
)
from .tokenization import DocumentTokenizerMixin

logger = logging.getLogger("longdoc.data")

__all__ = ["TextClassificationDataModule", "bpe_cache_key", "build_label_map", "load_or_train_bpe", "normalize_label"]

_BPE_SPECIAL = ("<pad>", "<cls>")
_BPE_VERSION = 1
_SOURCE_HINT = (
    "set data.hf_name (+ data.hf_config) to a Hugging Face dataset, or data.train_file and data.test_file "
    "(+ optional data.validation_file) to .csv/.tsv/.jsonl/.parquet files with columns data.text_key and data.label_key"
)

RawSplit = tuple[list[str], list[Any]]


def normalize_label(value: Any) -> Any:
    """Python scalar of a label: numpy scalars -> Python, integral floats -> ``int``, bools -> ``int``;
    strings are stripped; an integer-looking string stays a string."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        if value != value:  # NaN
            raise ValueError("missing label (NaN)")
        if value.is_integer():
            return int(value)
    if isinstance(value, str):
        return value.strip()
    return value


def build_label_map(train_labels: Sequence[Any], label_names: Sequence[Any] | None = None) -> dict[Any, int]:
    """Label -> id: ``label_names`` order if given, else the sorted distinct training labels
    (numeric order if all are ``int``, else sorted by ``str``).

    Raises:
        ValueError: duplicate ``label_names``, or no labels.
    """
    if label_names is not None:
        names = [normalize_label(x) for x in label_names]
        if len(set(names)) != len(names):
            raise ValueError(f"data.label_names has duplicates: {list(label_names)}")
        return {x: i for i, x in enumerate(names)}
    distinct = set(train_labels)
    if not distinct:
        raise ValueError("the training split has no labels")
    if all(isinstance(x, int) for x in distinct):
        ordered = sorted(distinct)
    else:
        ordered = sorted(distinct, key=str)
    return {x: i for i, x in enumerate(ordered)}


def bpe_cache_key(texts: Sequence[str], vocab_size: int, min_frequency: int) -> str:
    """SHA-256 (hex, 16 digits) of the training texts (length-prefixed UTF-8) and the BPE settings."""
    h = hashlib.sha256(f"bpe|{_BPE_VERSION}|{vocab_size}|{min_frequency}|{len(texts)}".encode())
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:16]


def load_or_train_bpe(texts: Sequence[str], vocab_size: int, min_frequency: int = 2, cache_dir: str | os.PathLike | None = None) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` for ``texts``: loaded from
    ``<cache_dir>/bpe-<key>.json`` if present, else trained (and saved there when ``cache_dir``).

    Special tokens: ``<pad>`` = 0, ``<cls>`` = 1.

    Raises:
        ValueError: ``vocab_size`` too small for the 256-byte alphabet plus specials, or a cached
            tokenizer whose special ids are not 0 and 1.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 256 + len(_BPE_SPECIAL):
        raise ValueError(f"bpe_vocab_size must be >= {256 + len(_BPE_SPECIAL)} (256 bytes + specials), got {vocab_size}")
    file = None
    if cache_dir is not None:
        file = Path(cache_dir) / f"bpe-{bpe_cache_key(texts, vocab_size, min_frequency)}.json"
        if file.is_file():
            tok = Tokenizer.from_file(str(file))
            logger.info("BPE tokenizer re-used from %s (%d ids)", file, tok.get_vocab_size())
            _check_specials(tok, file)
            return tok
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  special_tokens=list(_BPE_SPECIAL), initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer=trainer)
    _check_specials(tok, "the trained tokenizer")
    if file is not None:
        with atomic_write(file) as tmp:
            tok.save(str(tmp))
        logger.info("BPE tokenizer trained on %d texts (%d ids), saved to %s", len(texts), tok.get_vocab_size(), file)
    else:
        logger.info("BPE tokenizer trained on %d texts (%d ids), not cached", len(texts), tok.get_vocab_size())
    return tok


def _check_specials(tok: Any, where: Any) -> None:
    ids = [tok.token_to_id(t) for t in _BPE_SPECIAL]
    if ids != [PAD_ID, CLS_ID]:
        raise ValueError(f"{where}: special tokens {_BPE_SPECIAL} have ids {ids}, expected [{PAD_ID}, {CLS_ID}]")


def _is_missing(value: Any) -> bool:
    """True for ``None``, NaN, ``pandas.NA`` / ``NaT`` and strings that are empty or whitespace-only."""
    import pandas as pd

    if isinstance(value, str):
        return not value.strip()
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _text(value: Any) -> str:
    if not isinstance(value, (str, bytes, bytearray)) and _is_missing(value):
        return ""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _rows_in_words(rows: Sequence[int], lines: Sequence[int] | None, limit: int = 5) -> str:
    """``"lines 3, 7"`` (file lines of the 0-based ``rows``) or, without ``lines``, ``"row indices 3, 7, counting
    from 0"``; at most ``limit`` numbers, then ``"and N more"``."""
    numbers = list(rows) if lines is None else [lines[k] for k in rows]
    shown = ", ".join(str(n) for n in numbers[:limit])
    if len(numbers) > limit:
        shown += f" and {len(numbers) - limit} more"
    if lines is None:
        return f"{'row index' if len(numbers) == 1 else 'row indices'} {shown}, counting from 0"
    return f"{'line' if len(numbers) == 1 else 'lines'} {shown}"


class TextClassificationDataModule(DocumentTokenizerMixin, SourceDataModule):
    """LightningDataModule for long-document classification from the HF hub or local files.

    Batches: ``input_ids`` LongTensor (B, N) (``<cls>`` then byte + 2, or BPE ids), ``padding_mask``
    (B, N) bool, ``global_attention_mask`` (B, N) bool (True at 0 with ``add_cls``), ``labels``
    LongTensor (B,) in ``0..num_classes-1`` (mapping: :attr:`label_to_id`).

    Args:
        hf_name, hf_config: Hugging Face dataset (or ``None`` for local files).
        hf_train_split, hf_validation_split, hf_test_split: HF split names (validation ``None``:
            carved from train).
        train_file, validation_file, test_file: local files (validation ``None``: carved from train).
        text_key, label_key: column names.
        label_names: explicit label order (ids = positions); ``None``: sorted training labels.
        num_labels: number of classes, if known before ``setup`` without ``label_names``
            (otherwise reading :attr:`num_classes` before ``setup`` loads the data to count them).
        tokenizer: ``bytes`` or ``bpe``.
        tokenizer_file: a pretrained ``tokenizer.json`` (or its directory) used instead of ``bytes``; None = off.
        bpe_vocab_size, bpe_min_frequency: BPE settings (``vocab_size`` of the module equals
            ``bpe_vocab_size`` with ``bpe``).
        max_length: tokens kept per document (> 0), before ``<cls>``.
        val_fraction: held-out fraction of train when there is no validation split (0 < f < 1).
        cache_dir: where the BPE tokenizer (and HF downloads) are cached.
        drop_empty: ``False`` (default): a row with an empty / missing label or an empty / whitespace-only text is
            an error naming the file and its lines; ``True``: such rows are dropped and counted in the log.
        seed, batch_size, max_tokens_per_batch, num_workers, bucket_by_length, add_cls: see
            :class:`~longdoc.data.base.LongDocDataModule`.

    Raises:
        DataNotFoundError: no source configured (constructor), or missing files / unreachable hub
            / missing test split (``prepare_data`` / ``setup``); messages name the keys.
        ValueError: unknown ``tokenizer``, ``bpe`` with ``tokenizer_file``, bad sizes; (``prepare_data`` /
            ``setup``, before any training) an empty or non-UTF-8 file, a split without samples, a training set with a single class,
            missing columns, rows with an empty label or text (without ``drop_empty``; the message names the file
            and the lines or row indices), a malformed JSON line (file and line) or unknown labels; messages name
            the file and the config key to set.
    """

    display_name = "text classification"

    def __init__(
        self,
        hf_name: str | None = None,
        hf_config: str | None = None,
        hf_train_split: str = "train",
        hf_validation_split: str | None = None,
        hf_test_split: str = "test",
        train_file: str | os.PathLike | None = None,
        validation_file: str | os.PathLike | None = None,
        test_file: str | os.PathLike | None = None,
        text_key: str = "text",
        label_key: str = "label",
        label_names: Sequence[Any] | None = None,
        num_labels: int | None = None,
        tokenizer: str = "bytes",
        bpe_vocab_size: int = 8000,
        bpe_min_frequency: int = 2,
        max_length: int = 4000,
        val_fraction: float = 0.1,
        cache_dir: str | os.PathLike | None = None,
        seed: int = 0,
        batch_size: int = 32,
        max_tokens_per_batch: int | None = None,
        num_workers: int = 0,
        bucket_by_length: bool = True,
        add_cls: bool = True,
        tokenizer_file: str | os.PathLike | None = None,
        drop_empty: bool = False,
    ):
        super().__init__(batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch, num_workers=num_workers,
                         bucket_by_length=bucket_by_length, add_cls=add_cls, seed=seed)
        if tokenizer_file is not None and tokenizer == "bpe":
            raise ValueError(f"data.tokenizer=bpe trains a new vocabulary, but "
                             f"data.tokenizer_file={str(tokenizer_file)!r} names a pretrained one: set data.tokenizer=bytes (the file replaces it) or "
                             "data.tokenizer_file=null")
        if hf_name is None and train_file is None:
            raise DataNotFoundError(f"text_classification has no data source: {_SOURCE_HINT}")
        if hf_name is not None and train_file is not None:
            raise ValueError("set either data.hf_name or data.train_file, not both")
        if tokenizer not in ("bytes", "bpe"):
            raise ValueError(f"tokenizer must be 'bytes' or 'bpe', got {tokenizer!r}; set data.tokenizer")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}; set data.val_fraction")
        if not isinstance(drop_empty, bool):
            raise ValueError(f"data.drop_empty must be true or false, got {drop_empty!r}")
        if num_labels is not None and num_labels < 2:
            raise ValueError(f"num_labels must be >= 2, got {num_labels}")
        if tokenizer == "bpe" and bpe_vocab_size < 256 + len(_BPE_SPECIAL):
            raise ValueError(f"bpe_vocab_size must be >= {256 + len(_BPE_SPECIAL)}, got {bpe_vocab_size}")
        self.save_hyperparameters(logger=False)  # train.py passes plain lists (instantiate(_convert_="all"))
        self.hf_name, self.hf_config = hf_name, hf_config
        self.hf_train_split, self.hf_validation_split, self.hf_test_split = hf_train_split, hf_validation_split, hf_test_split
        self.train_file, self.validation_file, self.test_file = train_file, validation_file, test_file
        self.text_key, self.label_key = text_key, label_key
        self.label_names = None if label_names is None else list(label_names)
        self.num_labels = num_labels
        self.tokenizer = tokenizer
        self._init_tokenization(max_length, tokenizer_file)
        self.bpe_vocab_size, self.bpe_min_frequency = bpe_vocab_size, bpe_min_frequency
        self.val_fraction, self.cache_dir = val_fraction, cache_dir
        self.drop_empty = drop_empty
        self._label_map: dict[Any, int] | None = None
        self._tokenizer_obj: Any = None

    # ----------------------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        """258 for ``bytes``; ``bpe_vocab_size`` for ``bpe`` (the trained vocabulary may be smaller); the
        pretrained tokenizer's with ``tokenizer_file``."""
        if self.pretrained_tokenizer is not None:
            return self.pretrained_tokenizer.vocab_size
        return BYTE_VOCAB_SIZE if self.tokenizer == "bytes" else self.bpe_vocab_size

    @property
    def label_to_id(self) -> dict[Any, int]:
        """Label -> class id (loads the data on first use)."""
        if self._label_map is None:
            self._label_map = build_label_map(self._load()["train"][1], self.label_names)
        return self._label_map

    @property
    def num_classes(self) -> int:
        """Number of classes: ``len(label_names)``, else ``num_labels``, else counted from the
        training labels (which loads the data)."""
        if self.label_names is not None:
            return len(self.label_names)
        if self.num_labels is not None and self._label_map is None:
            return self.num_labels
        n = len(self.label_to_id)
        return max(n, self.num_labels or 0)

    # ----------------------------------------------------------------------------- loading
    def _check_columns(self, columns: Sequence[str], where: str) -> None:
        for key, name in ((self.text_key, "text_key"), (self.label_key, "label_key")):
            if key not in columns:
                raise ValueError(f"{where} has no column {key!r} (columns: {sorted(columns)}); set data.{name}")

    def _columns(self, table: dict[str, list[Any]], where: str, key: str, split: str,
                 lines: Callable[[], Sequence[int] | None] = lambda: None) -> RawSplit:
        """(texts, normalised labels) of one split read from ``where``; ``key`` is the config key that
        names the source (e.g. ``data.train_file``), ``lines()`` the file line of each row (``None``: rows are
        named by their 0-based index).

        Rows with an empty / missing label or an empty / whitespace-only text are an error, or dropped (and
        counted in the log) with ``drop_empty``.

        Raises:
            ValueError: a missing column, rows with an empty label or text (without ``drop_empty``), or no rows
                (the message names ``where``, the lines or row indices and the key to set).
        """
        self._check_columns(list(table), where)
        texts, raw_labels = list(table[self.text_key]), list(table[self.label_key])
        no_label = [k for k, y in enumerate(raw_labels) if _is_missing(y)]
        no_text = [k for k, t in enumerate(texts) if not _text(t).strip()]
        if no_label or no_text:
            row_lines = lines()
            if row_lines is not None and len(row_lines) != len(raw_labels):
                row_lines = None  # the file's lines do not match its rows: name rows by index
            parts = []
            if no_label:
                parts.append(f"{len(no_label)} with an empty or missing label in column {self.label_key!r} "
                             f"({_rows_in_words(no_label, row_lines)})")
            if no_text:
                parts.append(f"{len(no_text)} with an empty or whitespace-only text in column {self.text_key!r} "
                             f"({_rows_in_words(no_text, row_lines)})")
            if not self.drop_empty:
                raise ValueError(
                    f"{where} ({key}) has rows without a label or text: {'; '.join(parts)}. An empty label would "
                    "become a class of its own and an empty text has nothing to classify: fill in or delete those "
                    "rows, or set data.drop_empty=true to drop them (the number dropped is logged per split)")
            bad = set(no_label) | set(no_text)
            logger.warning("%s %s: dropped %d of %d rows of %s (data.drop_empty=true): %s", self.display_name, split,
                           len(bad), len(raw_labels), where, "; ".join(parts))
            keep = [k for k in range(len(raw_labels)) if k not in bad]
            texts, raw_labels = [texts[k] for k in keep], [raw_labels[k] for k in keep]
        labels = []
        for k, y in enumerate(raw_labels):
            try:
                labels.append(normalize_label(y))
            except ValueError as err:
                raise ValueError(f"{where} row {k}: {err}") from err
        if not labels:
            kind = "file" if key.endswith("_file") else "split"
            left = " left after data.drop_empty dropped its empty rows" if len(table[self.label_key]) else ""
            raise ValueError(f"{where} has no samples{left}; set {key} to a {kind} with at least one sample")
        return [_text(t) for t in texts], labels

    def _check_train_classes(self, labels: list[Any], where: str, key: str) -> None:
        """Raise ValueError (naming ``where``, ``data.label_key`` and ``key``) unless the training labels
        hold at least two classes."""
        distinct = set(labels)
        if len(distinct) < 2:
            raise ValueError(
                f"{where}: all {len(labels)} training samples have the label {next(iter(distinct))!r} in column "
                f"{self.label_key!r}; a classifier needs at least two classes: set data.label_key to the column "
                f"that holds the labels, or {key} to a training set with two or more classes"
            )

    def _load_files(self) -> dict[str, RawSplit | None]:
        if self.test_file is None:
            raise DataNotFoundError("data.train_file is set but data.test_file is not; set data.test_file "
                                    "(validation is carved from train when data.validation_file is null)")
        out: dict[str, RawSplit | None] = {"val": None}
        for split, f, key in (("train", self.train_file, "train_file"), ("val", self.validation_file, "validation_file"),
                              ("test", self.test_file, "test_file")):
            if f is None:
                continue
            if not Path(f).is_file():
                raise DataNotFoundError(f"data.{key}={str(f)!r} does not exist; {_SOURCE_HINT}")
            out[split] = self._columns(read_table(f, key=f"data.{key}"), str(f), f"data.{key}", split,
                                       lambda f=f: table_row_lines(f))
        self._check_train_classes(out["train"][1], str(self.train_file), "data.train_file")
        return out

    def _load_hf(self) -> dict[str, RawSplit | None]:
        ds = load_hf_dataset(self.hf_name, self.hf_config, key="data.train_file / data.test_file",
                             hint="local .csv/.tsv/.jsonl/.parquet files with columns data.text_key and data.label_key",
                             cache_dir=None if self.cache_dir is None else str(self.cache_dir))
        out: dict[str, RawSplit | None] = {"val": None}
        for split, name, key in (("train", self.hf_train_split, "hf_train_split"),
                                 ("val", self.hf_validation_split, "hf_validation_split"),
                                 ("test", self.hf_test_split, "hf_test_split")):
            if name is None:
                continue
            if name not in ds:
                raise DataNotFoundError(f"the Hugging Face dataset {self.hf_name!r} has no split {name!r} "
                                        f"(splits: {sorted(ds)}); set data.{key}")
            part = ds[name]
            where = f"the Hugging Face dataset {self.hf_name!r} split {name!r}"
            self._check_columns(part.column_names, where)
            out[split] = self._columns({self.text_key: part[self.text_key], self.label_key: part[self.label_key]},
                                       where, f"data.{key}", split)
        self._check_train_classes(out["train"][1], f"{self.hf_name}[{self.hf_train_split}]", "data.hf_train_split")
        return out

    def _read_source(self) -> dict[str, RawSplit]:
        """All three splits as (texts, raw labels), validation carved from train if absent."""
        raw = self._load_files() if self.hf_name is None else self._load_hf()
        if raw["val"] is None:
            n = len(raw["train"][0])
            raw["train"], raw["val"] = carve_validation_records(raw["train"], self.val_fraction, self.seed)
            logger.info("%s: validation = %d of %d training samples (val_fraction=%g, seed=%d)",
                        self.display_name, len(raw["val"][0]), n, self.val_fraction, self.seed)
        return raw  # type: ignore[return-value]

    def _bpe_dir(self) -> Path | None:
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        if self.train_file is not None:
            return Path(self.train_file).resolve().parent
        return None

    def _get_tokenizer(self) -> Any:
        if self._tokenizer_obj is None:
            self._tokenizer_obj = load_or_train_bpe(self._load()["train"][0], self.bpe_vocab_size,
                                                    self.bpe_min_frequency, self._bpe_dir())
        return self._tokenizer_obj

    def prepare_data(self) -> None:
        """Load / download the data and, with ``bpe``, train and cache the tokenizer.

        Raises:
            DataNotFoundError: missing files or unreachable hub.
        """
        super().prepare_data()
        if self.tokenizer == "bpe":
            self._get_tokenizer()

    def _build_datasets(self) -> dict[str, TokenSequenceDataset]:
        raw = self._load()
        mapping = self.label_to_id
        if self.num_labels is not None and len(mapping) > self.num_labels:
            raise ValueError(f"found {len(mapping)} labels but data.num_labels={self.num_labels}; raise data.num_labels")
        tokenizer = None
        out = {}
        for split in ("train", "val", "test"):
            texts, labels = raw[split]
            unknown = sorted({y for y in labels if y not in mapping}, key=str)
            if unknown:
                raise ValueError(f"{split} labels {unknown[:5]} are not among the labels {list(mapping)}; "
                                 "set data.label_names to list every label")
            if tokenizer is None:  # a BPE tokenizer is trained here (or read from its cache) on first use
                tokenizer = self.document_tokenizer(self._get_tokenizer() if self.tokenizer == "bpe" else None)
            out[split], cut = tokenizer.dataset(texts, [mapping[y] for y in labels])
            logger.info("%s %s: %s", self.display_name, split, tokenizer.truncation(cut, len(texts)))
        logger.info("%s labels: %s", self.display_name, ", ".join(f"{k!r} -> {v}" for k, v in mapping.items()))
        self._raw = None
        return out
