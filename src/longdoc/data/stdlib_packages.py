"""Which package does a source file belong to? Offline long-document classification on Python's own sources.

longdoc's own long-document benchmark that needs no download: every machine that runs longdoc has the
running interpreter's standard library (``sysconfig.get_paths()["stdlib"]``), a few thousand real,
long, human-written documents. The idea of training on the task's own text follows Amos, Berant &
Gupta (2023, "Never Train from Scratch: Fair Comparison of Long-Sequence Models Requires Data-Driven
Priors"), who self-pretrain on the downstream task's data instead of fetching a corpus; this task is
simply a corpus for such runs that is always present.

Documents and labels:

* one document per ``*.py`` file under ``path`` (default: the standard library), read as **bytes**
  (no decoding, so non-UTF-8 files are fine); files are listed in sorted order of their relative
  POSIX path;
* the label is the file's **top-level package**, the first component of its relative path
  (``email/mime/text.py`` -> ``email``; subpackages belong to their top-level package). A folder
  counts as a package whether or not it has an ``__init__.py`` (namespace packages);
* **top-level single-file modules** (``os.py``, ``typing.py``; ``json`` is a package folder, not one)
  are **excluded**: each would be a class of one file;
* folders whose *name* is in ``exclude_dirs`` or ``extra_exclude_dirs`` are not searched, at any depth
  (``exclude_dirs`` defaults to :data:`DEFAULT_EXCLUDE_DIRS`: ``test``, ``tests``, ``idle_test``, ``idlelib`` (an
  application, not a library), ``site-packages``, ``dist-packages``, ``__pycache__``; ``extra_exclude_dirs`` to
  none), so ``test/`` and ``ctypes/test/`` are both skipped. Setting ``exclude_dirs`` *replaces* the default list
  (``data.exclude_dirs=[x]`` searches ``test/`` and ``site-packages/`` again, which then become classes); to skip
  one more folder keep the defaults with ``data.extra_exclude_dirs=[x]``, or write the whole list
  (``data.exclude_dirs=[test,tests,idle_test,idlelib,site-packages,dist-packages,__pycache__,x]``);
* empty (0-byte) files are dropped: they carry no evidence of their package;
* packages with fewer than ``min_files_per_class`` files are dropped; a package with more than
  ``max_files_per_class`` keeps a seeded random subsample of that many (``null``: no cap).

Classes: the kept package names, sorted; class id = position in that order (:attr:`label_names`).
The number of classes depends on the Python version (``distutils`` left the standard library in
3.12, ``lib2to3`` in 3.13); on CPython 3.11 with the defaults there are 9.

Splits (stratified, whole files): within each kept package, its files (sorted by relative path) are
permuted with ``numpy.random.default_rng([seed, crc32(package name)])``; the first
``max_files_per_class`` of the permutation are kept (the cap), of those the first
``max(1, round(test_fraction * n))`` go to test, the next ``max(1, round(val_fraction * n))`` to
validation, the rest to training. So no file is in two splits, every class is in every split, the
split is the same for the same seed and installation, and a package's split does not depend on which
other packages are kept. Within a split, documents are in sorted path order.

Tokens: the first ``max_length`` bytes of the file (the number of files cut is logged per split),
ids ``0`` pad, ``1`` ``<cls>`` (prepended with ``add_cls``), byte ``v`` -> ``v + 2`` (258 ids, see
:mod:`longdoc.data.base`). With ``tokenizer_file`` (a pretrained ``tokenizer.json`` or its checkpoint directory;
``model=pretrained`` sets it) the whole file is decoded as UTF-8 (invalid bytes replaced) and encoded with that
tokenizer (:mod:`longdoc.data.pretrained_tokenizer`): the first ``max_length`` tokens, inside the tokenizer's
template (``[CLS] ... [SEP]``) with ``add_cls``.

Every choice above is logged at ``setup``: the folders skipped, top-level modules and empty files
dropped, packages dropped for too few files, packages capped (seeded subsample), split sizes,
truncation, lengths and the majority-class baseline. Nothing is cached on disk (reading the files
takes well under a second).
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .base import SPLITS, DataNotFoundError, LongDocDataModule, TokenSequenceDataset
from .tokenization import DocumentTokenizerMixin

logger = logging.getLogger("longdoc.data")

__all__ = [
    "DEFAULT_EXCLUDE_DIRS",
    "PackageFile",
    "PackageIndex",
    "StdlibPackagesDataModule",
    "list_package_files",
    "split_package_files",
]

#: Folder names never searched (at any depth) by default: the default of ``exclude_dirs`` (and of ``data.exclude_dirs``
#: in ``conf/data/stdlib_packages.yaml``, which repeats this list; an override replaces it).
DEFAULT_EXCLUDE_DIRS: tuple[str, ...] = ("test", "tests", "idle_test", "idlelib", "site-packages", "dist-packages",
                                         "__pycache__")


@dataclass(frozen=True)
class PackageFile:
    """One candidate document: ``relpath`` (POSIX, relative to the root), its ``label`` (top-level
    package), its ``path`` and its ``size`` in bytes (``os.stat``)."""

    relpath: str
    label: str
    path: Path
    size: int


@dataclass
class PackageIndex:
    """The result of listing a source tree (:func:`list_package_files`).

    Attributes:
        files: the package files (non-empty, outside excluded folders), sorted by ``relpath``.
        top_level_modules: number of ``*.py`` files directly in the root (excluded: no package).
        empty_files: number of 0-byte package files (dropped).
        skipped_dirs: ``{folder name: how many folders of that name were not searched}``.
    """

    files: list[PackageFile]
    top_level_modules: int = 0
    empty_files: int = 0
    skipped_dirs: dict[str, int] = field(default_factory=dict)


def list_package_files(root: str | os.PathLike, exclude_dirs: Sequence[str] = DEFAULT_EXCLUDE_DIRS) -> PackageIndex:
    """List the ``*.py`` files of ``root`` that belong to a top-level package (module docstring).

    Args:
        root: the source tree (e.g. the standard library folder).
        exclude_dirs: folder names not searched, at any depth.

    Returns:
        a :class:`PackageIndex` (files sorted by relative path; deterministic for a given tree).

    Raises:
        DataNotFoundError: ``root`` is not a folder (names ``data.path``).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"data.path={str(root)!r} is not a folder; set data.path to a Python source tree "
                                "(a folder of packages with .py files) or null for this interpreter's standard library")
    excluded = set(exclude_dirs)
    files: list[PackageFile] = []
    top_level = empty = 0
    skipped: Counter[str] = Counter()
    for dirpath, dirnames, filenames in os.walk(root):
        skipped.update(d for d in dirnames if d in excluded)
        dirnames[:] = sorted(d for d in dirnames if d not in excluded)
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root)
            if len(rel.parts) == 1:
                top_level += 1
                continue
            try:
                size = path.stat().st_size
            except OSError:  # a dangling symlink
                continue
            if size == 0:
                empty += 1
                continue
            files.append(PackageFile(rel.as_posix(), rel.parts[0], path, size))
    files.sort(key=lambda f: f.relpath)
    return PackageIndex(files, top_level, empty, dict(sorted(skipped.items())))


def split_package_files(
    files: Sequence[PackageFile],
    *,
    min_files_per_class: int,
    max_files_per_class: int | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[list[str], dict[str, list[PackageFile]], dict[str, int], dict[str, int]]:
    """Keep the packages with enough files, cap the largest and split each package's files (module docstring).

    Args:
        files: candidate files (from :func:`list_package_files`).
        min_files_per_class: packages with fewer files are dropped (>= 3).
        max_files_per_class: packages with more keep a seeded subsample of this many (``None``: all).
        val_fraction, test_fraction: per-package fractions held out (each at least one file).
        seed: non-negative seed of the subsample and of the split.

    Returns:
        ``(label_names, splits, dropped, capped)``: the kept package names (sorted); ``{"train", "val",
        "test"} -> files`` sorted by relative path; ``{package: file count}`` of the dropped packages;
        ``{package: file count before the cap}`` of the capped ones.
    """
    by_label: dict[str, list[PackageFile]] = {}
    for f in sorted(files, key=lambda f: f.relpath):
        by_label.setdefault(f.label, []).append(f)
    labels = sorted(lab for lab, fs in by_label.items() if len(fs) >= min_files_per_class)
    dropped = {lab: len(fs) for lab, fs in sorted(by_label.items()) if len(fs) < min_files_per_class}
    capped: dict[str, int] = {}
    splits: dict[str, list[PackageFile]] = {s: [] for s in SPLITS}
    for lab in labels:
        fs = by_label[lab]
        perm = np.random.default_rng([seed, zlib.crc32(lab.encode("utf-8"))]).permutation(len(fs))
        if max_files_per_class is not None and len(fs) > max_files_per_class:
            capped[lab] = len(fs)
            perm = perm[:max_files_per_class]
        n = len(perm)
        n_test = max(1, round(test_fraction * n))
        n_val = max(1, round(val_fraction * n))
        splits["test"] += [fs[i] for i in perm[:n_test]]
        splits["val"] += [fs[i] for i in perm[n_test : n_test + n_val]]
        splits["train"] += [fs[i] for i in perm[n_test + n_val :]]
    for s in SPLITS:
        splits[s].sort(key=lambda f: f.relpath)
    return labels, splits, dropped, capped


def _check_int(name: str, value: object, lo: int, rule: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"data.{name} must be {rule}, got {value!r}; set data.{name}")


class StdlibPackagesDataModule(DocumentTokenizerMixin, LongDocDataModule):
    """LightningDataModule: classify a Python source file (bytes) by its top-level package.

    Batches: ``input_ids`` LongTensor (B, N) (``<cls>`` then byte + 2), ``padding_mask`` (B, N) bool,
    ``global_attention_mask`` (B, N) bool (True at position 0 with ``add_cls``), ``labels`` LongTensor
    (B,) in ``0..num_classes-1`` (class ``k`` = package ``label_names[k]``). ``N <= max_length + add_cls``.

    Listing the files (no reading) happens on first use of :attr:`num_classes` / :attr:`label_names` /
    :attr:`split_files`; the files are read at ``setup``.

    Args:
        path: the source tree; ``None``: the running interpreter's standard library
            (``sysconfig.get_paths()["stdlib"]``).
        exclude_dirs: folder names not searched, at any depth (default :data:`DEFAULT_EXCLUDE_DIRS`); a value
            replaces the whole default list (``[x]`` searches ``test/`` and ``site-packages/`` again).
        extra_exclude_dirs: more folder names not searched, added to ``exclude_dirs`` (default none): the way to
            skip one more folder and keep the defaults (``data.extra_exclude_dirs=[x]``).
        min_files_per_class: packages with fewer files are dropped (integer >= 3: one file per split).
        max_files_per_class: larger packages keep a seeded subsample of this many files (>=
            ``min_files_per_class``); ``None``: no cap.
        val_fraction, test_fraction: fraction of each package's files held out for validation / test
            (each in (0, 1), their sum < 1; at least one file each).
        max_length: bytes kept per file (> 0; default 4096), before ``<cls>``; files cut are counted in the log
            (tokens with ``tokenizer_file``, before its special tokens).
        tokenizer_file: a pretrained ``tokenizer.json`` (or its directory) instead of bytes; None = bytes.
        seed: seed (>= 0) of the cap's subsample, of the split and of the batch shuffling.
        batch_size, max_tokens_per_batch, num_workers, bucket_by_length, add_cls: see
            :class:`~longdoc.data.base.LongDocDataModule`.

    Raises:
        ValueError: (constructor) an argument out of range, naming its key (``data.min_files_per_class
            must be ...``); (first listing) fewer than two packages kept.
        DataNotFoundError: (first listing) ``path`` is not a folder.
        OSError: (``setup``) a selected file cannot be read.
    """

    display_name = "stdlib packages"

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        exclude_dirs: Sequence[str] = DEFAULT_EXCLUDE_DIRS,
        extra_exclude_dirs: Sequence[str] = (),
        min_files_per_class: int = 20,
        max_files_per_class: int | None = 100,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        max_length: int = 4096,
        seed: int = 0,
        batch_size: int = 16,
        max_tokens_per_batch: int | None = None,
        num_workers: int = 0,
        bucket_by_length: bool = True,
        add_cls: bool = True,
        tokenizer_file: str | os.PathLike | None = None,
    ):
        super().__init__(batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch, num_workers=num_workers,
                         bucket_by_length=bucket_by_length, add_cls=add_cls, seed=seed)
        for name, dirs in (("exclude_dirs", exclude_dirs), ("extra_exclude_dirs", extra_exclude_dirs)):
            if isinstance(dirs, (str, bytes)) or not all(isinstance(d, str) and d and "/" not in d for d in dirs):
                raise ValueError(f"data.{name} must be a list of folder names (no '/'), got {dirs!r}; "
                                 f"e.g. data.{name}=[test,tests]")
        _check_int("min_files_per_class", min_files_per_class, 3, "an integer >= 3 (one file in each split)")
        if max_files_per_class is not None:
            _check_int("max_files_per_class", max_files_per_class, min_files_per_class,
                       f"null or an integer >= data.min_files_per_class={min_files_per_class}")
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
                raise ValueError(f"data.{name} must be in (0, 1), got {value!r}; set data.{name}")
        if val_fraction + test_fraction >= 1.0:
            raise ValueError(f"data.val_fraction + data.test_fraction must be < 1, got {val_fraction} + {test_fraction}; "
                             "lower one of them")
        _check_int("max_length", max_length, 1, "a positive integer")
        _check_int("seed", seed, 0, "a non-negative integer")
        self.save_hyperparameters(logger=False)  # train.py passes plain lists (instantiate(_convert_="all"))
        self.path = path
        self.exclude_dirs = tuple(dict.fromkeys([*exclude_dirs, *extra_exclude_dirs]))  # both lists, in order
        self.min_files_per_class, self.max_files_per_class = min_files_per_class, max_files_per_class
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self._init_tokenization(max_length, tokenizer_file)
        self._labels: list[str] | None = None
        self._split_files: dict[str, list[PackageFile]] | None = None

    # ----------------------------------------------------------------------------- properties
    @property
    def root(self) -> Path:
        """The source tree read: ``path``, or the interpreter's standard library."""
        return Path(self.path if self.path is not None else sysconfig.get_paths()["stdlib"])

    @property
    def label_names(self) -> list[str]:
        """The kept package names, sorted; class id = index (lists the files on first use)."""
        self._index()
        return list(self._labels)  # type: ignore[arg-type]

    @property
    def num_classes(self) -> int:
        """Number of kept packages (lists the files on first use)."""
        return len(self.label_names)

    @property
    def split_files(self) -> dict[str, list[str]]:
        """``{"train", "val", "test"} -> relative paths`` of each split's files (sorted)."""
        self._index()
        return {s: [f.relpath for f in fs] for s, fs in self._split_files.items()}  # type: ignore[union-attr]

    # ----------------------------------------------------------------------------- loading
    def _index(self) -> None:
        """List, filter, cap and split the files once (no file is read); logs every choice."""
        if self._labels is not None:
            return
        root = self.root
        where = (f"Python {sys.version.split()[0]} standard library {root}" if self.path is None else str(root))
        index = list_package_files(root, self.exclude_dirs)
        labels, splits, dropped, capped = split_package_files(
            index.files, min_files_per_class=self.min_files_per_class, max_files_per_class=self.max_files_per_class,
            val_fraction=self.val_fraction, test_fraction=self.test_fraction, seed=self.seed)
        name = self.display_name
        logger.info("%s: %s: %d package files; excluded: %d top-level single-file modules (no package), %d empty "
                    "files, folders not searched: %s (exclude_dirs + extra_exclude_dirs: %s)", name, where,
                    len(index.files), index.top_level_modules, index.empty_files,
                    ", ".join(f"{d} ({n})" for d, n in index.skipped_dirs.items()) or "none",
                    ", ".join(self.exclude_dirs) or "none")
        if dropped:
            logger.info("%s: %d packages with fewer than min_files_per_class=%d files dropped: %s", name, len(dropped),
                        self.min_files_per_class, ", ".join(f"{k} ({v})" for k, v in dropped.items()))
        if capped:
            logger.info("%s: packages capped at max_files_per_class=%d files (seeded random subsample, seed=%d): %s",
                        name, self.max_files_per_class, self.seed,
                        ", ".join(f"{k} {v} -> {self.max_files_per_class}" for k, v in capped.items()))
        if len(labels) < 2:
            raise ValueError(
                f"{name}: {where} has {len(labels)} package(s) with at least data.min_files_per_class="
                f"{self.min_files_per_class} .py files (packages found: {dict(Counter(f.label for f in index.files))}); "
                "a classifier needs two or more: lower data.min_files_per_class, shorten data.exclude_dirs or set "
                "data.path to another source tree")
        self._labels, self._split_files = labels, splits

    def _build_datasets(self) -> dict[str, TokenSequenceDataset]:
        self._index()
        mapping = {lab: i for i, lab in enumerate(self._labels)}  # type: ignore[arg-type]
        tokenizer = self.document_tokenizer()
        out = {}
        for split in SPLITS:
            files = self._split_files[split]  # type: ignore[index]
            docs, labels = [], []
            for f in files:
                with open(f.path, "rb") as fh:
                    docs.append(fh.read(tokenizer.read_limit))
                labels.append(mapping[f.label])
            dataset, cut = tokenizer.dataset(docs, labels)
            sizes = np.array([f.size for f in files], dtype=np.int64)
            logger.info("%s %s: %s (file size median %d, max %d bytes)", self.display_name, split,
                        tokenizer.truncation(cut, len(docs), "files"), int(np.median(sizes)), int(sizes.max()))
            per_class = Counter(labels)
            logger.info("%s %s files per class: %s", self.display_name, split,
                        ", ".join(f"{lab} ({mapping[lab]}): {per_class.get(mapping[lab], 0)}" for lab in self._labels))
            out[split] = dataset
        return out
