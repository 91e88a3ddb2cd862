"""Shared machinery of every longdoc data module: datasets, collation, resumable state, file helpers.

:class:`LongDocDataModule` owns what all data modules have in common (length-bucketed batch sampling
with :class:`~longdoc.data.samplers.LengthBucketBatchSampler`, padding a list of samples into the
batch dict, resuming mid-epoch from a Lightning checkpoint, building the DataLoaders, the
majority-class baseline and the per-split length / label logging). A concrete module (one per
dataset: ``listops.py``, ``lra_text.py``, ...) only loads its splits
(:meth:`LongDocDataModule._build_datasets`) and states its vocabulary and classes. The collator follows the task
(:data:`TASK_DOCUMENTS`). A data set read once from its source (a download or local files) builds on
:class:`SourceDataModule`, an image data set on :class:`PixelDataModule`; records (documents and labels) are split
with :func:`carve_validation_records` / :func:`select_records`, and byte / pixel values become token ids with
:func:`byte_values_dataset` (documents: :mod:`longdoc.data.tokenization`). This module also defines the constants
shared by all datasets (:data:`PAD_ID`, :data:`CLS_ID`, :data:`SPLITS`, ...) and the atomic file write
(:func:`atomic_write`) used by every on-disk cache.

Batch contract (dicts of tensors, ``N`` = longest sample in the batch, padding on the right):

* ``classification``: ``input_ids`` LongTensor (B, N), ``padding_mask`` BoolTensor (B, N) (True =
  real token), ``global_attention_mask`` BoolTensor (B, N) (True at the CLS position 0 when the
  samples start with ``<cls>``, else all False), ``labels`` LongTensor (B,).
* ``retrieval`` (LRA's two-tower matching): the same four keys for document 1 plus
  ``input_ids_2``, ``padding_mask_2``, ``global_attention_mask_2`` for document 2 (padded to its
  own longest, ``N2``).
* ``lm``: ``input_ids`` LongTensor (B, N) (bytes), ``padding_mask`` (B, N), an all-False
  ``global_attention_mask`` and ``labels`` LongTensor (B, N), the next byte, ``-100``
  (:data:`IGNORE_INDEX`) where there is no target.

Token ids of the byte / pixel tasks (LRA text, retrieval, image, pathfinder, text classification
with ``tokenizer=bytes``): ``0`` = ``<pad>``, ``1`` = ``<cls>``, value ``v`` in 0..255 -> ``v + 2``
(:data:`VALUE_OFFSET`), so the vocabulary has 258 ids. LRA itself encodes bytes with
``tfds.deprecated.text.ByteTextEncoder`` (``byte + 1``, ``0`` = padding, 257 ids); with
``classifier_pool='CLS'`` (its text configs) its encoders prepend a learned CLS embedding after the
token embedding. Our extra id ``1`` is that CLS, as a token.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .samplers import LengthBucketBatchSampler, Repeat, padding_fraction

logger = logging.getLogger("longdoc.data")

__all__ = [
    "PAD_ID",
    "CLS_ID",
    "VALUE_OFFSET",
    "BYTE_VOCAB_SIZE",
    "IGNORE_INDEX",
    "SPLITS",
    "TASK_DOCUMENTS",
    "Records",
    "DataNotFoundError",
    "TokenSequenceDataset",
    "PairedSequenceDataset",
    "ByteWindowDataset",
    "PaddingCollator",
    "RepeatMarkingDataset",
    "LongDocDataModule",
    "SourceDataModule",
    "PixelDataModule",
    "carve_validation",
    "carve_validation_records",
    "select_records",
    "byte_values_dataset",
    "load_hf_dataset",
    "read_table",
    "table_row_lines",
    "describe_json_error",
    "atomic_write",
    "atomic_save_npy",
    "sha256_hex",
]

#: ``<pad>`` id (all tasks).
PAD_ID: int = 0
#: ``<cls>`` id (all tasks that prepend one: byte / pixel tasks, ListOps, BPE text classification).
CLS_ID: int = 1
#: Byte / pixel value ``v`` is token id ``v + VALUE_OFFSET``.
VALUE_OFFSET: int = 2
#: Vocabulary of the byte / pixel tasks: ``<pad>``, ``<cls>`` and 256 values.
BYTE_VOCAB_SIZE: int = 256 + VALUE_OFFSET
#: Label of positions without a target (PyTorch ``cross_entropy``'s default ``ignore_index``).
IGNORE_INDEX: int = -100
#: The split names every data module provides, in order.
SPLITS: tuple[str, ...] = ("train", "val", "test")


#: The documents of each task's batches, as the suffixes of their keys (``input_ids``, ``input_ids_2``, ...):
#: one collator per task (:meth:`LongDocDataModule._collator`).
TASK_DOCUMENTS: dict[str, tuple[str, ...]] = {"classification": ("",), "retrieval": ("", "_2"), "lm": ("",)}


class DataNotFoundError(FileNotFoundError):
    """Data files (or a hub dataset) are missing; the message names the config key to set and
    where the data come from."""


# ------------------------------------------------------------------------------------------------
# Datasets
# ------------------------------------------------------------------------------------------------
class TokenSequenceDataset(Dataset):
    """Sequences of small integers (bytes, pixels, sub-word ids) with one label each.

    Values are stored once, compactly (``uint8`` for bytes / pixels), and mapped to token ids on
    access: ``ids = prefix + (values + offset)``. Variable-length data are stored flat with offsets;
    fixed-length data (images) may be given as one 2-D array, e.g. a read-only ``np.memmap``.

    Args:
        sequences: one sequence of values per sample: ``bytes``, 1-D integer arrays or lists; or a
            2-D array (num_samples, L) of equal-length sequences.
        labels: (num_samples,) integer labels.
        offset: added to every value (:data:`VALUE_OFFSET` for bytes / pixels, 0 for token ids).
        prefix: token ids put before every sequence (``(CLS_ID,)`` or ``()``).
        dtype: storage dtype of the values (default: ``uint8`` for ``bytes``, else the smallest of
            ``uint8`` / ``int32`` / ``int64`` that holds them).
        row_index: with a 2-D ``sequences``, sample ``i`` is row ``row_index[i]`` (a split of a
            larger, possibly memory-mapped array without copying it).

    Items: ``dataset[i]`` is ``{"input_ids": np.ndarray (L_i,) int64, "label": int}``.

    Attributes:
        lengths: ``np.ndarray`` (num_samples,) int64, sequence lengths including the prefix.
        labels: ``np.ndarray`` (num_samples,) int64.

    Raises:
        ValueError: sequences and labels differ in number, or a sequence (with its prefix) is empty.
    """

    def __init__(
        self,
        sequences: Sequence[Any] | np.ndarray,
        labels: Sequence[int] | np.ndarray,
        *,
        offset: int = 0,
        prefix: Sequence[int] = (),
        dtype: Any = None,
        row_index: Sequence[int] | np.ndarray | None = None,
    ):
        self.offset = int(offset)
        self.prefix = np.asarray(list(prefix), dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if isinstance(sequences, np.ndarray) and sequences.ndim == 2:
            self.rows: np.ndarray | None = sequences
            self.row_index = None if row_index is None else np.asarray(row_index, dtype=np.int64)
            n_rows = len(sequences) if self.row_index is None else len(self.row_index)
            raw = np.full(n_rows, sequences.shape[1], dtype=np.int64)
            self.flat = np.zeros(0, dtype=sequences.dtype)
            self.offsets = None
        else:
            self.rows = None
            if len(sequences) and all(isinstance(s, (bytes, bytearray, memoryview)) for s in sequences):
                raw = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
                self.flat = np.frombuffer(b"".join(sequences), dtype=np.uint8)
                if dtype is not None:
                    self.flat = self.flat.astype(dtype)
            else:
                arrays = [np.asarray(s).reshape(-1) for s in sequences]
                raw = np.fromiter((a.size for a in arrays), dtype=np.int64, count=len(arrays))
                flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
                if dtype is None:
                    hi = int(flat.max()) if flat.size else 0
                    lo = int(flat.min()) if flat.size else 0
                    dtype = np.uint8 if 0 <= lo and hi < 256 else (np.int32 if -(2**31) <= lo and hi < 2**31 else np.int64)
                self.flat = flat.astype(dtype, copy=False)
            self.offsets = np.zeros(len(raw) + 1, dtype=np.int64)
            np.cumsum(raw, out=self.offsets[1:])
        if len(raw) != len(self.labels):
            raise ValueError(f"got {len(raw)} sequences but {len(self.labels)} labels")
        self.lengths = raw + len(self.prefix)
        if len(self.lengths) and self.lengths.min() < 1:
            bad = int(np.argmin(self.lengths))
            raise ValueError(f"sample {bad} is empty (no values and no prefix); keep add_cls=true or drop empty samples")

    def __len__(self) -> int:
        return len(self.lengths)

    def values(self, i: int) -> np.ndarray:
        """The stored values of sample ``i`` (without prefix and offset)."""
        if self.rows is not None:
            return np.asarray(self.rows[i if self.row_index is None else self.row_index[i]])
        return self.flat[self.offsets[i] : self.offsets[i + 1]]

    def __getitem__(self, i: int) -> dict[str, Any]:
        vals = self.values(i).astype(np.int64)
        if self.offset:
            vals += self.offset
        ids = np.concatenate([self.prefix, vals]) if len(self.prefix) else vals
        return {"input_ids": ids, "label": int(self.labels[i])}


class PairedSequenceDataset(Dataset):
    """Two documents per sample (LRA retrieval): ``dataset[i]`` is
    ``{"input_ids": (L1_i,) int64, "input_ids_2": (L2_i,) int64, "label": int}``.

    Args:
        first, second: :class:`TokenSequenceDataset` of equal size; labels are taken from ``first``.

    Attributes:
        lengths: (num_samples,) ``max(L1_i, L2_i)``: the length used for bucketing and the token
            cap (each document tensor of a batch then has at most ``max_tokens_per_batch`` slots).
        lengths_1, lengths_2: the per-document lengths. labels: (num_samples,) int64.

    Raises:
        ValueError: the two datasets differ in size.
    """

    def __init__(self, first: TokenSequenceDataset, second: TokenSequenceDataset):
        if len(first) != len(second):
            raise ValueError(f"document datasets differ in size: {len(first)} vs {len(second)}")
        self.first, self.second = first, second
        self.labels = first.labels
        self.lengths_1, self.lengths_2 = first.lengths, second.lengths
        self.lengths = np.maximum(first.lengths, second.lengths)

    def __len__(self) -> int:
        return len(self.first)

    def __getitem__(self, i: int) -> dict[str, Any]:
        a, b = self.first[i], self.second[i]
        return {"input_ids": a["input_ids"], "input_ids_2": b["input_ids"], "label": a["label"]}


class ByteWindowDataset(Dataset):
    """Windows over a byte stream for next-byte prediction.

    A window of ``seq_len + 1`` bytes gives ``input_ids = w[:-1]`` and ``label = w[1:]`` (both
    ``(L,) int64``, ``L <= seq_len``).

    Args:
        data: (num_bytes,) ``uint8`` array.
        seq_len: input length of a window.
        consecutive: ``True`` (evaluation): item ``i`` is the window starting at ``i * seq_len``,
            non-overlapping, the last one possibly shorter; every byte but the first is a target
            exactly once. ``False`` (training): item ``s`` is the window starting at byte ``s``,
            ``0 <= s < num_bytes - seq_len`` (indices come from
            :class:`~longdoc.data.samplers.RandomWindowBatchSampler`).

    Attributes:
        lengths: (num_windows,) int64 input lengths (``consecutive`` only; ``None`` otherwise).
        max_length: the longest input (``seq_len``, or less for a short evaluation split).

    Raises:
        ValueError: ``seq_len <= 0`` or too few bytes (``< 2``; ``< seq_len + 1`` for training).
    """

    def __init__(self, data: np.ndarray, seq_len: int, *, consecutive: bool):
        if seq_len <= 0:
            raise ValueError(f"seq_len must be > 0, got {seq_len}")
        self.data = np.asarray(data, dtype=np.uint8).reshape(-1)
        self.seq_len = int(seq_len)
        self.consecutive = consecutive
        n = len(self.data)
        if consecutive:
            if n < 2:
                raise ValueError(f"an evaluation split needs at least 2 bytes, got {n}")
            self.starts = np.arange(0, n - 1, self.seq_len, dtype=np.int64)
            self.lengths = np.minimum(self.seq_len, n - 1 - self.starts)
            self.max_length = int(self.lengths.max())
        else:
            if n < self.seq_len + 1:
                raise ValueError(
                    f"the training split has {n} bytes, fewer than seq_len + 1 = {self.seq_len + 1}; "
                    "lower data.seq_len or raise data.max_bytes"
                )
            self.starts = None
            self.lengths = None
            self.max_length = self.seq_len

    def __len__(self) -> int:
        return len(self.starts) if self.consecutive else len(self.data) - self.seq_len

    def __getitem__(self, i: int) -> dict[str, Any]:
        start = int(self.starts[i]) if self.consecutive else int(i)
        if not self.consecutive and not 0 <= start < len(self):
            raise IndexError(f"window start {start} out of range [0, {len(self)})")
        w = self.data[start : start + self.seq_len + 1].astype(np.int64)
        return {"input_ids": w[:-1], "label": w[1:]}


# ------------------------------------------------------------------------------------------------
# Collation
# ------------------------------------------------------------------------------------------------
class RepeatMarkingDataset(Dataset):
    """View of ``dataset`` whose items fetched through a :class:`~longdoc.data.samplers.Repeat` index
    (a sample repeated to even out the ranks' batches) carry ``"repeat": True``.
    Other attributes (``lengths``, ``labels``, ...) are those of ``dataset``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.dataset[int(i)]
        return {**item, "repeat": True} if isinstance(i, Repeat) else item

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)


def _pad(seqs: Sequence[np.ndarray], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    n = int(lengths.max())
    out = np.full((len(seqs), n), value, dtype=np.int64)
    for row, s in enumerate(seqs):
        out[row, : lengths[row]] = s
    mask = torch.arange(n).unsqueeze(0) < torch.from_numpy(lengths).unsqueeze(1)
    return torch.from_numpy(out), mask


class PaddingCollator:
    """Pad a list of dataset items to the longest one and build the batch dict.

    Args:
        pad_id: padding token id.
        has_cls: position 0 of every sequence is ``<cls>`` (``global_attention_mask`` True there;
            otherwise all False).
        suffixes: one entry per document: ``("",)`` (one document) or ``("", "_2")`` (retrieval).

    Call: ``collator(items) -> dict``; items carry ``input_ids<sfx>`` ((L,) int arrays) and
    ``label`` (an ``int``, or an (L,) array of next-token targets for language modelling). Output:
    for each suffix ``input_ids<sfx>`` LongTensor (B, N) padded with ``pad_id``,
    ``padding_mask<sfx>`` BoolTensor (B, N), ``global_attention_mask<sfx>`` BoolTensor (B, N); then
    ``labels``: LongTensor (B,) for int labels, or (B, N) padded with :data:`IGNORE_INDEX`. Items with
    ``"repeat": True`` (a :class:`~longdoc.data.samplers.Repeat` index under DDP) get :data:`IGNORE_INDEX`
    as every label.

    Raises:
        ValueError: on an empty list of items.
    """

    def __init__(self, pad_id: int = PAD_ID, has_cls: bool = True, suffixes: Sequence[str] = ("",)):
        self.pad_id = pad_id
        self.has_cls = has_cls
        self.suffixes = tuple(suffixes)

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not items:
            raise ValueError("PaddingCollator: empty batch")
        out: dict[str, torch.Tensor] = {}
        for sfx in self.suffixes:
            ids, mask = _pad([it["input_ids" + sfx] for it in items], self.pad_id)
            glob = torch.zeros(ids.shape, dtype=torch.bool)
            if self.has_cls:
                glob[:, 0] = True
            out["input_ids" + sfx] = ids
            out["padding_mask" + sfx] = mask
            out["global_attention_mask" + sfx] = glob
        if np.ndim(items[0]["label"]) == 0:
            out["labels"] = torch.tensor([it["label"] for it in items], dtype=torch.long)
        else:
            out["labels"] = _pad([it["label"] for it in items], IGNORE_INDEX)[0]
        repeat = torch.tensor([bool(it.get("repeat", False)) for it in items])
        if repeat.any():  # samples repeated to even out DDP shards: counted by no loss or metric
            out["labels"][repeat] = IGNORE_INDEX
        return out


# ------------------------------------------------------------------------------------------------
# Helpers shared by the loaders
# ------------------------------------------------------------------------------------------------
def carve_validation(num_samples: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(num_samples)`` into (train, validation) indices: a seeded random
    ``round(fraction * num_samples)`` samples go to validation (both index arrays sorted).

    Raises:
        ValueError: ``fraction`` outside ``[0, 1)``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(num_samples)
    n_val = int(round(fraction * num_samples))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


#: Records of a data set's split: ``(documents, labels)``, one label per document.
Records = tuple[list[Any], list[Any]]


def select_records(records: tuple[Sequence[Any], Sequence[Any]], indices: Sequence[int] | np.ndarray) -> Records:
    """The records at ``indices``, in that order: ``([documents[i] ...], [labels[i] ...])``."""
    documents, labels = records
    return [documents[i] for i in indices], [labels[i] for i in indices]


def carve_validation_records(records: tuple[Sequence[Any], Sequence[Any]], fraction: float,
                             seed: int) -> tuple[Records, Records]:
    """``(train, validation)`` records: :func:`carve_validation` applied to ``records`` (each part in file order).

    Raises:
        ValueError: ``fraction`` outside ``[0, 1)``.
    """
    train, val = carve_validation(len(records[0]), fraction, seed)
    return select_records(records, train), select_records(records, val)


def byte_values_dataset(values: Sequence[Any] | np.ndarray, labels: Sequence[int] | np.ndarray, *, add_cls: bool,
                        dtype: Any = None, row_index: Sequence[int] | np.ndarray | None = None) -> TokenSequenceDataset:
    """Byte or pixel values (0..255) as a :class:`TokenSequenceDataset` of ids ``value + VALUE_OFFSET``, after
    ``<cls>`` when ``add_cls``: the tokenisation of every byte / pixel task.

    Args:
        values: ``bytes`` per sample, 1-D arrays, or one 2-D (num_samples, L) array (e.g. memory-mapped images).
        labels: one integer label per sample.
        add_cls: prepend :data:`CLS_ID`.
        dtype, row_index: see :class:`TokenSequenceDataset`.

    Raises:
        ValueError: see :class:`TokenSequenceDataset`.
    """
    return TokenSequenceDataset(values, labels, offset=VALUE_OFFSET, prefix=(CLS_ID,) if add_cls else (), dtype=dtype,
                                row_index=row_index)


def load_hf_dataset(name: str, config: str | None = None, *, key: str, hint: str, **kwargs: Any) -> Any:
    """``datasets.load_dataset(name, config, **kwargs)``, with hub / network failures turned into a
    :class:`DataNotFoundError` that names the config key for local files.

    Args:
        name, config: hub dataset name and configuration.
        key: the config key to set instead (e.g. ``data.path``).
        hint: where the local files come from and what layout they have.

    Raises:
        DataNotFoundError: the dataset could not be loaded (offline, unknown name, ...).
    """
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is a dependency
        raise DataNotFoundError(f"the `datasets` package is needed to load '{name}'; or set {key} ({hint})") from err
    try:
        return datasets.load_dataset(name, config, **kwargs)
    except Exception as err:  # ConnectionError, DatasetNotFoundError, OfflineModeIsEnabled, ...
        raise DataNotFoundError(
            f"could not load the Hugging Face dataset '{name}'"
            + (f" (config '{config}')" if config else "")
            + f": {type(err).__name__}: {err}. Without access to the Hugging Face hub, set {key} instead: {hint}"
        ) from err


#: Plain words for the messages of Python's ``json`` module (the first words of ``JSONDecodeError.msg``).
_JSON_ERROR_WORDS = {
    "Extra data": "more text after the end of the first JSON value (two objects on one line? write one object per "
                  "line)",
    "Expecting value": "a value is missing where one was expected (a trailing comma, an unquoted word, or a line "
                       "that is not JSON)",
    "Expecting ',' delimiter": "a comma is missing between two entries",
    "Expecting ':' delimiter": "a colon is missing between a key and its value",
    "Expecting property name enclosed in double quotes": "a key is not in double quotes (or a comma comes right "
                                                         "before the closing brace)",
    "Illegal trailing comma": "a comma right before a closing brace or bracket",
    "Unterminated string": "a string is not closed (a missing double quote)",
    "Invalid control character": "a raw control character (a tab or line break) inside a string; write it as \\t "
                                 "or \\n",
    "Invalid \\escape": "an invalid backslash escape inside a string (write a backslash as \\\\)",
}


def describe_json_error(err: json.JSONDecodeError) -> str:
    """``err`` in words: the column, a plain-words description where one is known, and Python's own message.

    Args:
        err: the error of ``json.loads``.

    Returns:
        e.g. ``"column 28: more text after the end of the first JSON value (...) [json: Extra data]"``.
    """
    words = next((w for prefix, w in _JSON_ERROR_WORDS.items() if err.msg.startswith(prefix)), None)
    return f"column {err.colno}: " + (f"{words} [json: {err.msg}]" if words else err.msg)


def _json_line_error(text: str) -> tuple[int, str] | None:
    """The first problem of ``text`` read as JSON lines (one object per line, blank lines skipped): ``(1-based line,
    "line N, column C: ...")``; ``None`` when every non-blank line is a JSON object."""
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            return number, f"line {number}, {describe_json_error(err)}"
        if not isinstance(value, dict):
            return number, (f"line {number}: a JSON {type(value).__name__} where one object (a row with the columns "
                            "as keys, e.g. {\"text\": \"...\", \"label\": \"...\"}) was expected")
    return None


def _read_json_table(path: Path, key: str | None) -> Any:
    """``path`` (``.jsonl``: JSON lines; ``.json``: JSON lines or one JSON document, e.g. a list of records) as a
    pandas DataFrame; every line is checked with ``json.loads`` first, so a malformed line is reported by its number.

    Raises:
        ValueError: no JSON objects, or a malformed line / document (names ``path``, the line, the column and the
            JSON error in words, and ``key``).
        UnicodeDecodeError: the file is not UTF-8 (:func:`read_table` reports where).
    """
    import pandas as pd

    text = path.read_bytes().decode("utf-8-sig")  # a BOM is no data
    other = f"; or set {key} to another file" if key else ""
    if not text.strip():
        raise ValueError(f"{path} is empty (no JSON objects); write one JSON object per line{other}")
    found = _json_line_error(text)
    if found is None:
        return pd.read_json(io.StringIO(text), lines=True)
    bad_line, problem = found
    what = "JSON lines"
    if path.suffix.lower() == ".json":  # may be one JSON document (a list of records, a dict of columns)
        try:
            json.loads(text)
        except json.JSONDecodeError as err:
            first = next(n for n, line in enumerate(text.split("\n"), start=1) if line.strip())
            if bad_line == first:  # not JSON lines at all: the document's own error
                problem, what = f"line {err.lineno}, {describe_json_error(err)}", "JSON"
        else:
            return pd.read_json(io.StringIO(text))
    fix = ("fix the JSON at that position" if what == "JSON" else
           "each line must hold one complete JSON object (a .json file may instead be one JSON list of objects): "
           "fix or delete that line")
    raise ValueError(f"{path} is not valid {what}: {problem}; {fix}{other}")


def read_table(path: str | os.PathLike, *, key: str | None = None) -> dict[str, list[Any]]:
    """Read a CSV (``.csv``), TSV (``.tsv``), JSON-lines (``.jsonl``, ``.json``) or parquet
    (``.parquet``) file with a header / field names into ``{column: list of values}`` (pandas).

    Text files are read as UTF-8. In CSV / TSV an empty cell is missing (``NaN``) and every other cell keeps its
    text (``NA``, ``null``, ``None`` are not missing values). Every line of a JSON-lines file is checked with
    ``json.loads`` before pandas reads the file; a ``.json`` file may also be one JSON document (a list of
    records). Blank lines are skipped. :func:`table_row_lines` gives the line of each row.

    Args:
        path: the file.
        key: the config key that names the file (e.g. ``data.train_file``); error messages name it.

    Returns:
        ``{column name: list of values}`` (no rows: empty lists).

    Raises:
        DataNotFoundError: the file does not exist.
        ValueError: an unsupported extension, an empty file (no header row / no JSON object), a JSON-lines file
            with a malformed line (the message names the file, the 1-based line, the column and the JSON error in
            words) or a text file that is not valid UTF-8 (the message names the file, the line of the first bad
            byte and ``key``).
    """
    import pandas as pd

    path = Path(path)
    fix = f"; set {key} to a file with a header row and one sample per row" if key else ""
    if not path.is_file():
        raise DataNotFoundError(f"{path} does not exist" + (f"; set {key}" if key else ""))
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            df = pd.read_csv(path, sep="," if suffix == ".csv" else "\t", keep_default_na=False, na_values=[""])
        elif suffix in (".jsonl", ".json"):
            df = _read_json_table(path, key)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            raise ValueError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .jsonl/.json or .parquet")
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty (no header row){fix}") from None
    except UnicodeDecodeError as pandas_err:
        raw = path.read_bytes()
        err = pandas_err
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as file_err:  # the offset in the file (pandas reports one in its buffer)
            err = file_err
        line = raw.count(b"\n", 0, err.start) + 1
        raise ValueError(
            f"{path} is not UTF-8 text (line {line}, byte {err.start}: {err.reason}); re-encode it as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8)" + (f" or set {key} to a UTF-8 file" if key else "")
        ) from None
    return {str(c): df[c].tolist() for c in df.columns}


def table_row_lines(path: str | os.PathLike) -> list[int] | None:
    """The 1-based line of the file on which each row of :func:`read_table` ``(path)`` starts, as a user counts
    lines (CSV / TSV: the header is line 1, a quoted field may span lines; JSON lines: one row per non-blank line).

    Reads the file again (call it only to report or log rows). Blank lines are skipped as :func:`read_table`
    skips them.

    Args:
        path: a file :func:`read_table` has read.

    Returns:
        one line number per row, or ``None`` when rows have no line of their own (parquet, a ``.json`` file that is
        one JSON document) or the file cannot be read as text.
    """
    import csv

    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            lines: list[int] = []
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.reader(fh, delimiter="," if suffix == ".csv" else "\t")
                header = True
                while True:
                    start = reader.line_num + 1
                    try:
                        row = next(reader)
                    except StopIteration:
                        break
                    if len(row) <= 1 and not "".join(row).strip():  # pandas skips blank lines
                        continue
                    if header:
                        header = False
                    else:
                        lines.append(start)
            return lines
        if suffix in (".jsonl", ".json"):
            text = path.read_bytes().decode("utf-8-sig")  # a BOM is no data
            if _json_line_error(text) is not None:  # one JSON document
                return None
            return [n for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Write a file atomically: yield a temporary path beside ``path``, then rename it onto ``path``.

    The caller writes the whole file to the yielded path (``.<name>.<pid>.tmp`` in the same folder,
    which is created if needed); when the ``with`` block ends without an exception the file is moved
    onto ``path`` with ``os.replace``, so readers (other processes included) see either the old file
    or the complete new one, never a partial file. On an exception the temporary file is removed
    and the exception propagates.

    Raises:
        OSError: the folder cannot be created or the rename fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save(array)`` to ``path`` through :func:`atomic_write` (readers never see a partial file)."""
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def sha256_hex(*chunks: bytes) -> str:
    """Hex SHA-256 of the concatenated chunks."""
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# The base data module
# ------------------------------------------------------------------------------------------------
class LongDocDataModule(pl.LightningDataModule):
    """Base LightningDataModule: length-bucketed batches, batch dicts, resumable training position.

    Subclasses implement :meth:`_build_datasets` (load and tokenise the three splits) and the
    properties :attr:`vocab_size` and :attr:`num_classes`; they may override
    :meth:`_max_seq_len_bound` (``max_seq_len`` before ``setup``), :meth:`_collator`,
    :meth:`_make_sampler`, :meth:`_compute_baseline` / :meth:`_log_summary` and ``prepare_data``.
    Subclasses call ``self.save_hyperparameters(logger=False)`` in their own ``__init__``.

    Class attributes:
        task: ``"classification"``, ``"retrieval"`` or ``"lm"``.
        display_name: dataset name used in log lines.

    Args (keyword-only):
        batch_size: maximum samples per batch (> 0).
        max_tokens_per_batch: optional cap on ``B * N`` per batch (>= the longest sample).
        num_workers: DataLoader workers (>= 0).
        bucket_by_length: bucket training batches by length and sort evaluation batches by length;
            ``False`` gives random (train) / dataset-order (eval) batches.
        add_cls: samples start with ``<cls>`` (``global_attention_mask`` True there).
        seed: base seed of the batch shuffling (and of the subclass's data splits).

    Raises:
        ValueError: non-positive ``batch_size`` / ``max_tokens_per_batch``, negative ``num_workers``;
            at ``setup``, an empty split or ``max_tokens_per_batch`` smaller than the longest sample.
    """

    task: str = "classification"
    display_name: str = "data"

    def __init__(
        self,
        *,
        batch_size: int = 32,
        max_tokens_per_batch: int | None = None,
        num_workers: int = 0,
        bucket_by_length: bool = True,
        add_cls: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}; set data.batch_size > 0")
        if max_tokens_per_batch is not None and max_tokens_per_batch <= 0:
            raise ValueError(
                f"max_tokens_per_batch must be positive or None, got {max_tokens_per_batch}; "
                "set data.max_tokens_per_batch=null to disable the cap"
            )
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.num_workers = num_workers
        self.bucket_by_length = bucket_by_length
        self.add_cls = add_cls
        self.seed = seed
        self.datasets: dict[str, Dataset] = {}
        self._majority_class_accuracy: float | None = None
        self._max_seq_len: int | None = None
        self._train_sampler: Sampler | None = None
        self._resume_state: dict[str, int] | None = None

    # ----------------------------------------------------------------------------- to implement
    def _build_datasets(self) -> dict[str, Dataset]:
        """Load and tokenise the splits: ``{"train", "val", "test"} -> dataset``; each dataset has
        ``lengths`` ((num_samples,) int64, or ``max_length`` for LM training) and ``labels``."""
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        """Number of token ids."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        """Number of classes (for ``lm``: the vocabulary size)."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------- properties
    @property
    def pad_id(self) -> int:
        """Id of ``<pad>`` (0)."""
        return PAD_ID

    @property
    def cls_id(self) -> int | None:
        """Id of ``<cls>`` (1)."""
        return CLS_ID

    def _max_seq_len_bound(self) -> int:
        """``max_seq_len`` before ``setup`` (from the config)."""
        raise NotImplementedError

    @property
    def max_seq_len(self) -> int:
        """Longest sequence (CLS included; for retrieval, over both documents) over all splits after
        ``setup``; before ``setup`` the bound given by the configuration."""
        if self._max_seq_len is not None:
            return self._max_seq_len
        return self._max_seq_len_bound()

    @property
    def majority_class_accuracy(self) -> float:
        """Test accuracy (in [0, 1]) of always predicting the most frequent training label.

        Raises:
            AttributeError: before ``setup()`` (so ``getattr(dm, "majority_class_accuracy", default)``
                returns ``default``).
        """
        if self._majority_class_accuracy is None:
            raise AttributeError(f"majority_class_accuracy is available only after {type(self).__name__}.setup()")
        return self._majority_class_accuracy

    # ----------------------------------------------------------------------------- setup
    @staticmethod
    def _longest(ds: Dataset) -> int:
        lengths = getattr(ds, "lengths", None)
        if lengths is None:
            return int(ds.max_length)
        return max(int(np.max(lengths)), int(np.max(getattr(ds, "lengths_2", lengths))))

    def setup(self, stage: str | None = None) -> None:
        """Load all splits (:meth:`_build_datasets`), check them, compute statistics (idempotent).

        Args:
            stage: Lightning stage; all splits are set up regardless (the baseline needs train and test).

        Raises:
            ValueError: an empty split, or ``max_tokens_per_batch`` smaller than the longest sample.
            DataNotFoundError: missing data (from the subclass).
        """
        if self.datasets:
            return
        datasets = self._build_datasets()
        for split in SPLITS:
            if split not in datasets or len(datasets[split]) == 0:
                raise ValueError(f"{self.display_name} split '{split}' is empty")
        longest = max(self._longest(ds) for ds in datasets.values())
        if self.max_tokens_per_batch is not None and self.max_tokens_per_batch < longest:
            raise ValueError(
                f"max_tokens_per_batch ({self.max_tokens_per_batch}) is smaller than the longest sample "
                f"({longest} tokens{' incl. CLS' if self.add_cls else ''}); "
                f"set data.max_tokens_per_batch >= {longest} or null"
            )
        self.datasets = datasets
        self._max_seq_len = longest
        self._compute_baseline()
        self._log_summary()

    def _compute_baseline(self) -> None:
        """Majority-class test accuracy (most frequent training label; ties -> smallest label)."""
        counts = Counter(self.datasets["train"].labels.tolist())
        self._majority_label = min(counts, key=lambda c: (-counts[c], c))
        self._train_label_counts = counts
        self._majority_class_accuracy = float(np.mean(self.datasets["test"].labels == self._majority_label))

    def _log_summary(self) -> None:
        """Log split sizes and lengths, the training label distribution, the baseline and padding."""
        name = self.display_name
        for split, ds in self.datasets.items():
            logger.info(
                "%s %s: %d samples, length (tokens%s) min/mean/max = %d/%.1f/%d",
                name,
                split,
                len(ds),
                " incl. CLS" if self.add_cls else "",
                int(ds.lengths.min()),
                float(ds.lengths.mean()),
                int(ds.lengths.max()),
            )
        counts = self._train_label_counts
        n_train = len(self.datasets["train"])
        dist = ", ".join(f"{c}: {100.0 * counts.get(c, 0) / n_train:.1f}%" for c in range(self.num_classes))
        logger.info("%s train label distribution: %s", name, dist)
        logger.info(
            "%s majority class (train) = %d; majority-class test accuracy = %.4f",
            name,
            self._majority_label,
            self._majority_class_accuracy,
        )
        sampler = self._make_sampler("train")
        logger.info(
            "%s train batches: %d (batch_size=%d, max_tokens_per_batch=%s, bucket_by_length=%s), "
            "padding fraction %.3f",
            name,
            len(sampler),
            self.batch_size,
            self.max_tokens_per_batch,
            self.bucket_by_length,
            padding_fraction(sampler.batches(), self.datasets["train"].lengths),
        )

    # ----------------------------------------------------------------------------- loaders
    def _collator(self) -> PaddingCollator:
        """The task's collate function: the documents of :data:`TASK_DOCUMENTS` ``[task]``, CLS iff ``add_cls``."""
        return PaddingCollator(self.pad_id, self.add_cls, suffixes=TASK_DOCUMENTS[self.task])

    def _make_sampler(self, split: str) -> Sampler:
        """Batch sampler of ``split``: shuffled length buckets for train, sorted batches otherwise."""
        if not self.datasets:
            raise RuntimeError("call setup() before requesting dataloaders")
        return LengthBucketBatchSampler(
            self.datasets[split].lengths,
            self.batch_size,
            max_tokens_per_batch=self.max_tokens_per_batch,
            shuffle=split == "train",
            bucket=self.bucket_by_length,
            seed=self.seed,
        )

    def state_dict(self) -> dict[str, int]:
        """Position of training inside the current epoch, saved in every Lightning checkpoint:
        ``{"epoch", "batches_done"}`` (``batches_done`` read from the trainer's loop progress, since
        the loader runs ahead of the loop by its prefetch)."""
        trainer = getattr(self, "trainer", None)
        sampler = getattr(self, "_train_sampler", None)
        if trainer is None or sampler is None:
            return {}
        return {"epoch": int(sampler.epoch),
                "batches_done": int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Resume mid-epoch: the next training loader skips the batches of ``epoch`` already trained on.
        (Lightning restores data modules before it first asks for the training loader.)"""
        self._resume_state = dict(state_dict) if state_dict else None

    def _dataloader(self, split: str) -> DataLoader:
        sampler = self._make_sampler(split)
        if split == "train":
            self._train_sampler = sampler
            if self._resume_state is not None:
                sampler.skip_batches(self._resume_state["epoch"], self._resume_state["batches_done"])
                self._resume_state = None
        dataset = self.datasets[split]
        n_repeats = sum(isinstance(b[0], Repeat) for b in sampler.batches() if b) if hasattr(sampler, "batches") else 0
        if n_repeats:
            logger.info("%s %s: %d of this rank's %d batches repeat samples to give every rank the same number of "
                        "batches; their labels are ignored, so no loss or metric counts a sample twice",
                        self.display_name, split, n_repeats, len(sampler))
            dataset = RepeatMarkingDataset(dataset)
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=self._collator(),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        """Training loader: shuffled (length-bucketed) batches, re-shuffled per epoch via
        ``set_epoch`` (which Lightning calls)."""
        return self._dataloader("train")

    def val_dataloader(self) -> DataLoader:
        """Validation loader: deterministic batches (length-sorted when bucketing)."""
        return self._dataloader("val")

    def test_dataloader(self) -> DataLoader:
        """Test loader: deterministic batches (length-sorted when bucketing)."""
        return self._dataloader("test")


class SourceDataModule(LongDocDataModule):
    """A :class:`LongDocDataModule` whose data set is a source of records read once: :meth:`_read_source` (a
    download or the local files) runs on the first :meth:`_load`, whose result is kept until the subclass's
    :meth:`~LongDocDataModule._build_datasets` has turned it into token ids (it then sets ``self._raw = None``).
    ``prepare_data`` reads the source (so a missing file fails there, before any training)."""

    _raw: Any = None

    def _read_source(self) -> Any:
        """Read the data set (the splits' records); called once, by :meth:`_load`."""
        raise NotImplementedError

    def _load(self) -> Any:
        """The source's records (:meth:`_read_source` on first use, then kept)."""
        if self._raw is None:
            self._raw = self._read_source()
        return self._raw

    def prepare_data(self) -> None:
        """Download (Hugging Face hub) or check and read the local files.

        Raises:
            DataNotFoundError: missing data (the message names the config key to set).
        """
        self._load()


class PixelDataModule(LongDocDataModule):
    """A :class:`LongDocDataModule` of images as pixel sequences (LRA image, pathfinder): every sample has
    :attr:`num_pixels` grayscale values, tokenised by :func:`byte_values_dataset` (258 ids)."""

    #: Pixels per image (the subclass sets it, or overrides the property).
    num_pixels: int = 0

    @property
    def vocab_size(self) -> int:
        """258: ``<pad>``, ``<cls>`` and 256 pixel values."""
        return BYTE_VOCAB_SIZE

    def _max_seq_len_bound(self) -> int:
        """Every sample: ``num_pixels`` + 1 for ``<cls>`` (with ``add_cls``)."""
        return self.num_pixels + int(self.add_cls)

    def pixel_dataset(self, pixels: np.ndarray, labels: Sequence[int] | np.ndarray,
                      row_index: Sequence[int] | np.ndarray | None = None) -> TokenSequenceDataset:
        """Images ``pixels`` (num_images, num_pixels) uint8 (rows ``row_index`` of it, if given) as token ids."""
        return byte_values_dataset(pixels, labels, add_cls=self.add_cls, row_index=row_index)
