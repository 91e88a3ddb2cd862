"""Byte-level language modelling (bits per byte): enwik8, or a corpus every machine already has.

Sources (``source`` option):

* ``"stdlib"`` (default, offline, no download): the ``*.py`` source files of the running Python's
  standard library (``sysconfig.get_paths()['stdlib']``, ``site-packages`` / ``dist-packages`` and
  ``__pycache__`` excluded), sorted by relative path. Each file goes to train / val / test by a
  hash of its relative path (SHA-1, first 8 hex digits as a fraction of 2**32: < 0.90 train,
  < 0.95 val, else test), so the split is deterministic for a given Python version and whole
  files never straddle splits. Each split is the concatenation of its files' bytes, in order.
* ``"file"``: ``path`` = the 100M-byte ``enwik8`` file (http://mattmahoney.net/dc/enwik8.zip; the
  ``.zip`` itself is read too), split as Transformer-XL's / Al-Rfou et al.'s ``prep_enwik8.py``:
  the last 5M bytes are test, the 5M before them validation, the first 90M training
  (``num_test_chars = 5000000``; for a file of another size, 5% / 5%).
* ``"hf"``: the Hugging Face dataset ``hf_name`` / ``hf_config`` (``LTCB/enwik8`` /
  ``enwik8-raw``: one ``text`` string), encoded as UTF-8 and split as ``"file"``. The HF loader
  decodes the file as text, so the byte count can differ slightly from the raw file; use
  ``"file"`` for comparisons with published numbers.

``max_bytes`` (default 8 MB) caps the corpus for CPU-sized runs: each split keeps the prefix of its
share (90% / 5% / 5% of ``max_bytes``); ``null`` keeps everything. A capped enwik8 is not the
standard benchmark.

Samples: ``input_ids`` are raw bytes (ids 0..255, vocabulary 256), ``labels`` the next byte.
Training draws random windows of ``seq_len + 1`` bytes (seeded, new each epoch,
:class:`~longdoc.data.samplers.RandomWindowBatchSampler`); validation and test use consecutive
non-overlapping windows (every byte but a split's first is predicted exactly once).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np

from .base import (
    SPLITS,
    ByteWindowDataset,
    DataNotFoundError,
    LongDocDataModule,
    PaddingCollator,
    load_hf_dataset,
)
from .samplers import RandomWindowBatchSampler

logger = logging.getLogger("longdoc.data")

__all__ = [
    "ENWIK8_HINT",
    "Enwik8DataModule",
    "cap_splits",
    "read_enwik8_file",
    "split_90_5_5",
    "stdlib_corpus",
    "stdlib_python_files",
    "stdlib_split_of",
    "unigram_entropy_bits",
]

#: Where enwik8 comes from (used in error messages).
ENWIK8_HINT = "the 100M-byte enwik8 file (http://mattmahoney.net/dc/enwik8.zip, unzipped or not)"
_EXCLUDED_DIRS = {"site-packages", "dist-packages", "__pycache__"}


def stdlib_python_files(root: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """``(relative posix path, path)`` of every ``*.py`` file under the standard library (or
    ``root``), sorted by relative path, excluding ``site-packages``, ``dist-packages`` and
    ``__pycache__`` folders.

    Raises:
        DataNotFoundError: the folder does not exist or holds no ``.py`` files.
    """
    root = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _EXCLUDED_DIRS)
        for name in filenames:
            if name.endswith(".py"):
                p = Path(dirpath) / name
                files.append((p.relative_to(root).as_posix(), p))
    if not files:
        raise DataNotFoundError(f"no .py files under {root}; use data.source=file with data.path={ENWIK8_HINT}")
    return sorted(files)


def stdlib_split_of(relpath: str) -> str:
    """Split of a file by the hash of its relative path: ``train`` (90%), ``val`` (5%), ``test`` (5%)."""
    u = int(hashlib.sha1(relpath.encode("utf-8")).hexdigest()[:8], 16) / 2**32
    return "train" if u < 0.90 else ("val" if u < 0.95 else "test")


def _quotas(max_bytes: int) -> dict[str, int]:
    small = max_bytes * 5 // 100
    return {"train": max_bytes - 2 * small, "val": small, "test": small}


def stdlib_corpus(max_bytes: int | None = None, root: str | os.PathLike | None = None) -> dict[str, bytes]:
    """The standard-library corpus: ``{"train", "val", "test"} -> bytes`` (see the module docstring).

    With ``max_bytes``, files are read in order until each split holds its share (90% / 5% / 5%),
    the last file of a split cut at the quota; without, every file is read.

    Raises:
        DataNotFoundError: no Python files found.
    """
    quotas = _quotas(max_bytes) if max_bytes is not None else None
    parts: dict[str, list[bytes]] = {s: [] for s in SPLITS}
    sizes = dict.fromkeys(SPLITS, 0)
    for rel, path in stdlib_python_files(root):
        split = stdlib_split_of(rel)
        if quotas is not None:
            room = quotas[split] - sizes[split]
            if room <= 0:
                if all(sizes[s] >= quotas[s] for s in SPLITS):
                    break
                continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if quotas is not None:
            data = data[:room]
        parts[split].append(data)
        sizes[split] += len(data)
    return {s: b"".join(parts[s]) for s in SPLITS}


def read_enwik8_file(path: str | os.PathLike) -> bytes:
    """The raw bytes of ``path``: the ``enwik8`` file, or a ``.zip`` holding a member ``enwik8``
    (else its only member).

    Raises:
        DataNotFoundError: the file does not exist (names ``data.path``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"data.path={str(path)!r} does not exist; set data.path to {ENWIK8_HINT}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            member = "enwik8" if "enwik8" in names else (names[0] if len(names) == 1 else None)
            if member is None:
                raise DataNotFoundError(f"{path} has no member 'enwik8' (members: {names[:5]})")
            return zf.read(member)
    return path.read_bytes()


def split_90_5_5(data: bytes) -> dict[str, bytes]:
    """Transformer-XL's enwik8 split: test = last ``n // 20`` bytes (5M of 100M), val = the
    ``n // 20`` before, train = the rest."""
    nt = len(data) // 20
    cut = len(data) - 2 * nt
    return {"train": data[:cut], "val": data[cut : cut + nt], "test": data[cut + nt :]}


def cap_splits(splits: dict[str, bytes], max_bytes: int | None) -> dict[str, bytes]:
    """Keep the prefix of each split's share of ``max_bytes`` (90% / 5% / 5%); ``None``: unchanged."""
    if max_bytes is None:
        return splits
    q = _quotas(max_bytes)
    return {s: splits[s][: q[s]] for s in SPLITS}


def unigram_entropy_bits(data: np.ndarray) -> float:
    """Entropy in bits of the byte distribution of ``data`` (uint8): ``-sum p log2 p``."""
    counts = np.bincount(np.asarray(data, dtype=np.uint8), minlength=256).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


class Enwik8DataModule(LongDocDataModule):
    """LightningDataModule for byte-level language modelling (enwik8 or the stdlib corpus), bits per byte.

    Batches: ``input_ids`` LongTensor (B, N) bytes 0..255, ``padding_mask`` (B, N) bool,
    ``global_attention_mask`` (B, N) bool all False, ``labels`` LongTensor (B, N): the next byte,
    ``-100`` at padding. Training batches are ``batch_size`` random windows with ``N = seq_len``;
    evaluation batches are consecutive windows (the last one may be shorter and padded).

    Args:
        source: ``"stdlib"``, ``"file"`` or ``"hf"`` (module docstring).
        path: the enwik8 file for ``source="file"``.
        hf_name, hf_config: Hugging Face dataset for ``source="hf"``.
        cache_dir: Hugging Face cache folder (``None``: HF's default).
        max_bytes: corpus cap (90/5/5 of it per split); ``None``: everything.
        seq_len: window length (> 0).
        train_windows_per_epoch: random windows per training epoch (default: training bytes //
            ``seq_len``, one pass's worth of tokens).
        seed: seed of the window draws.
        batch_size, num_workers: see :class:`~longdoc.data.base.LongDocDataModule`.

    Raises:
        ValueError: unknown ``source``, non-positive ``seq_len`` / ``max_bytes`` /
            ``train_windows_per_epoch`` / ``batch_size``; ``setup``: a training split shorter than
            ``seq_len + 1`` bytes.
        DataNotFoundError: (``prepare_data`` / ``setup``) missing ``path`` or unreachable hub.
    """

    task = "lm"
    display_name = "enwik8"

    def __init__(
        self,
        source: str = "stdlib",
        path: str | os.PathLike | None = None,
        hf_name: str = "LTCB/enwik8",
        hf_config: str | None = "enwik8-raw",
        cache_dir: str | os.PathLike | None = None,
        max_bytes: int | None = 8_000_000,
        seq_len: int = 512,
        train_windows_per_epoch: int | None = None,
        seed: int = 0,
        batch_size: int = 16,
        num_workers: int = 0,
    ):
        super().__init__(batch_size=batch_size, max_tokens_per_batch=None, num_workers=num_workers,
                         bucket_by_length=False, add_cls=False, seed=seed)
        if source not in ("stdlib", "file", "hf"):
            raise ValueError(f"source must be 'stdlib', 'file' or 'hf', got {source!r}; set data.source")
        if source == "file" and path is None:
            raise DataNotFoundError(f"data.source=file needs data.path: {ENWIK8_HINT}")
        for name, value in (("seq_len", seq_len), ("max_bytes", max_bytes), ("train_windows_per_epoch", train_windows_per_epoch)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value}; set data.{name}")
        self.save_hyperparameters(logger=False)
        self.source, self.path, self.hf_name, self.hf_config, self.cache_dir = source, path, hf_name, hf_config, cache_dir
        self.max_bytes, self.seq_len, self.train_windows_per_epoch = max_bytes, seq_len, train_windows_per_epoch
        self.display_name = "stdlib corpus" if source == "stdlib" else "enwik8"
        self._unigram_bits: float | None = None

    @property
    def vocab_size(self) -> int:
        """256 byte values (padding reuses id 0, told apart by ``padding_mask``)."""
        return 256

    @property
    def num_classes(self) -> int:
        """256: the next byte."""
        return 256

    @property
    def cls_id(self) -> None:
        """No ``<cls>`` in language modelling."""
        return None

    def _max_seq_len_bound(self) -> int:
        return self.seq_len

    @property
    def majority_class_accuracy(self) -> float:
        """Not defined for language modelling (see :attr:`unigram_bits_per_byte`).

        Raises:
            AttributeError: always.
        """
        raise AttributeError("majority_class_accuracy is not defined for language modelling; see unigram_bits_per_byte")

    @property
    def unigram_bits_per_byte(self) -> float:
        """Entropy (bits) of the training byte distribution: the bits per byte of a unigram model,
        a baseline for the model's bits per byte.

        Raises:
            AttributeError: before ``setup()``.
        """
        if self._unigram_bits is None:
            raise AttributeError(f"unigram_bits_per_byte is available only after {type(self).__name__}.setup()")
        return self._unigram_bits

    def _read_splits(self) -> dict[str, bytes]:
        if self.source == "stdlib":
            return stdlib_corpus(self.max_bytes)
        if self.source == "file":
            data = read_enwik8_file(self.path)
        else:
            ds = load_hf_dataset(self.hf_name, self.hf_config, key="data.path (with data.source=file)", hint=ENWIK8_HINT,
                                 split="train", cache_dir=None if self.cache_dir is None else str(self.cache_dir))
            texts = ds["text"]
            data = (texts[0] if len(texts) == 1 else "\n".join(texts)).encode("utf-8")
        return cap_splits(split_90_5_5(data), self.max_bytes)

    def prepare_data(self) -> None:
        """Check the file / download the HF dataset.

        Raises:
            DataNotFoundError: missing data.
        """
        if self.source == "file":
            if not Path(self.path).is_file():
                read_enwik8_file(self.path)  # raises with the hint
        elif self.source == "hf":
            self._read_splits()

    def _build_datasets(self) -> dict[str, ByteWindowDataset]:
        splits = self._read_splits()
        arrays = {s: np.frombuffer(b, dtype=np.uint8) for s, b in splits.items()}
        return {
            "train": ByteWindowDataset(arrays["train"], self.seq_len, consecutive=False),
            "val": ByteWindowDataset(arrays["val"], self.seq_len, consecutive=True),
            "test": ByteWindowDataset(arrays["test"], self.seq_len, consecutive=True),
        }

    def _compute_baseline(self) -> None:
        self._unigram_bits = unigram_entropy_bits(self.datasets["train"].data)

    def _log_summary(self) -> None:
        sizes = ", ".join(f"{s} {len(ds.data):,} bytes" for s, ds in self.datasets.items())
        extra = f" (Python {sys.version.split()[0]} standard library)" if self.source == "stdlib" else ""
        logger.info("%s%s: %s (max_bytes=%s)", self.display_name, extra, sizes, self.max_bytes)
        logger.info("%s: seq_len=%d, %d training windows per epoch in %d batches, unigram entropy %.4f bits/byte",
                    self.display_name, self.seq_len, self._windows_per_epoch(), len(self._make_sampler("train")),
                    self._unigram_bits)

    def _windows_per_epoch(self) -> int:
        if self.train_windows_per_epoch is not None:
            return self.train_windows_per_epoch
        return max(1, len(self.datasets["train"].data) // self.seq_len)

    def _collator(self) -> PaddingCollator:
        return PaddingCollator(self.pad_id, has_cls=False)

    def _make_sampler(self, split: str):
        if split != "train":
            return super()._make_sampler(split)
        if not self.datasets:
            raise RuntimeError("call setup() before requesting dataloaders")
        return RandomWindowBatchSampler(
            len(self.datasets["train"]),
            self.batch_size,
            math.ceil(self._windows_per_epoch() / self.batch_size),
            seed=self.seed,
        )
