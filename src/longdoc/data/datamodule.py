"""Lightning data module for Long Range Arena's ListOps with length-bucketed dynamic padding.

Data come either from LRA's released files (``path``, see
:func:`longdoc.data.listops.load_listops_from_path`) or from our re-implementation of LRA's
generator (``lra_benchmarks/data/listops.py``), cached on disk
(:func:`longdoc.data.listops.load_or_generate_listops`). Tokenisation follows LRA's
``lra_benchmarks/listops/input_pipeline.py``; unlike LRA (which pads every batch to a fixed
``max_length``), batches are padded only to their longest sample and samples of similar length are
batched together (length bucketing), which keeps padding small.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .base import LongDocDataModule, PaddingCollator, Repeat
from .listops import (
    CLS_ID,
    NUM_CLASSES,
    PAD_ID,
    SPLITS,
    VOCAB_SIZE,
    Row,
    encode_listops,
    load_listops_from_path,
    load_or_generate_listops,
)

logger = logging.getLogger("longdoc.data")

__all__ = ["ListOpsDataset", "ListOpsCollator", "LengthBucketBatchSampler", "ListOpsDataModule", "padding_fraction"]


class ListOpsDataset(Dataset):
    """Variable-length token-id sequences with integer labels (no padding stored).

    Token ids are stored in one flat ``uint8`` array with offsets (the ListOps vocabulary has 18
    ids), i.e. one token-id list per sample without per-element Python objects.

    Args:
        token_ids: one sequence of token ids per sample (ints in ``[0, 256)``; lists or 1-D arrays).
        labels: one label per sample.

    Items: ``dataset[i]`` is ``{"input_ids": np.ndarray (L_i,) uint8, "label": int}``.

    Attributes:
        lengths: ``np.ndarray`` (num_samples,) int64, the sequence lengths (incl. CLS if present).
        labels: ``np.ndarray`` (num_samples,) int64.

    Raises:
        ValueError: if ``token_ids`` and ``labels`` differ in length, a sequence is empty or an
            id is outside ``[0, 256)``.
    """

    def __init__(self, token_ids: Sequence[Sequence[int]], labels: Sequence[int]):
        if len(token_ids) != len(labels):
            raise ValueError(f"got {len(token_ids)} sequences but {len(labels)} labels")
        self.lengths = np.fromiter((len(x) for x in token_ids), dtype=np.int64, count=len(token_ids))
        if len(self.lengths) and self.lengths.min() < 1:
            raise ValueError("ListOpsDataset: empty sequences are not allowed")
        self.offsets = np.zeros(len(token_ids) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=self.offsets[1:])
        if len(token_ids) == 0:
            flat = np.zeros(0, dtype=np.int64)
        elif all(isinstance(x, np.ndarray) for x in token_ids):
            flat = np.concatenate([np.asarray(x).reshape(-1) for x in token_ids]).astype(np.int64, copy=False)
        else:
            flat = np.fromiter((t for x in token_ids for t in x), dtype=np.int64, count=int(self.offsets[-1]))
        if flat.size and (flat.min() < 0 or flat.max() > 255):
            raise ValueError("ListOpsDataset: token ids must lie in [0, 256)")
        self.flat = flat.astype(np.uint8)
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.flat[self.offsets[i] : self.offsets[i + 1]], "label": int(self.labels[i])}


# The batch contract (input_ids, padding_mask, global_attention_mask, labels) is built by the shared collator.
ListOpsCollator = PaddingCollator


class _EpochForwarder:
    """Exposed as ``batch_sampler.sampler`` so that Lightning's ``_set_sampler_epoch`` (which calls
    ``set_epoch`` on ``dataloader.batch_sampler.sampler``) reaches the batch sampler."""

    def __init__(self, owner: LengthBucketBatchSampler):
        self._owner = owner

    def set_epoch(self, epoch: int) -> None:
        self._owner.set_epoch(epoch)


def _cut_batches(order: np.ndarray, lengths: np.ndarray, batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """Cut an index order into consecutive batches of at most ``batch_size`` samples and, if
    ``max_tokens`` is set, at most ``max_tokens`` padded tokens (``B * max length``)."""
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order.tolist():
        length = int(lengths[i])
        new_max = max(cur_max, length)
        if cur and (len(cur) >= batch_size or (max_tokens is not None and (len(cur) + 1) * new_max > max_tokens)):
            batches.append(cur)
            cur = []
            new_max = length
        cur.append(i)
        cur_max = new_max
    if cur:
        batches.append(cur)
    return batches


class LengthBucketBatchSampler(Sampler):
    """Batch sampler that groups samples of similar length to minimise padding.

    With ``shuffle=True`` (training), each epoch: permute all indices (seeded by ``(seed, epoch)``),
    split the permutation into pools of ``pool_factor * batch_size`` samples, sort each pool by
    length (if ``bucket``), cut it into batches, then shuffle the order of all batches. With
    ``shuffle=False`` (evaluation), indices are sorted by length (if ``bucket``; otherwise kept in
    dataset order) and cut into batches, deterministically. This is the usual "bucket iterator" /
    sorted-pool batching (e.g. torchtext ``BucketIterator``, fairseq); LRA itself pads every batch
    to a fixed length (``lra_benchmarks/listops/input_pipeline.py``).

    Batches have at most ``batch_size`` samples and, if ``max_tokens_per_batch`` is set, satisfy
    ``B * N <= max_tokens_per_batch`` where ``N`` is the longest sample in the batch.

    Distributed: with ``num_replicas > 1`` (taken from ``torch.distributed`` when initialised and
    not given), every rank builds the same batch list, it is padded cyclically to a multiple of
    ``num_replicas`` and rank ``r`` takes batches ``r, r + num_replicas, ...`` (so all ranks get the
    same number of batches). The indices of the repeated batches are :class:`~longdoc.data.base.Repeat`
    objects: the data module marks those samples and the collator ignores their labels, so every sample is
    counted exactly once in losses and metrics. With Lightning and several devices, set
    ``Trainer(use_distributed_sampler=False)``: Lightning cannot inject its own sampler into a
    custom batch sampler.

    Args:
        lengths: (num_samples,) sequence lengths.
        batch_size: maximum samples per batch (> 0).
        max_tokens_per_batch: optional cap on ``B * N`` (>= the longest sample).
        shuffle: random pools and batch order (training) vs deterministic order (evaluation).
        bucket: sort by length (within pools when shuffling); ``False`` gives plain random /
            sequential batching.
        pool_factor: pool size in batches (default 50).
        seed: base seed; the epoch is added via :meth:`set_epoch`.
        num_replicas, rank: distributed sharding (default: from ``torch.distributed``, else 1, 0).

    Yields:
        Lists of ``int`` dataset indices, one per batch.

    Raises:
        ValueError: if ``batch_size <= 0``, ``pool_factor <= 0``, ``max_tokens_per_batch`` is
            smaller than the longest sample, or ``rank`` is not in ``[0, num_replicas)``.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        max_tokens_per_batch: int | None = None,
        shuffle: bool = True,
        bucket: bool = True,
        pool_factor: int = 50,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        if pool_factor <= 0:
            raise ValueError(f"pool_factor must be > 0, got {pool_factor}")
        longest = int(self.lengths.max()) if len(self.lengths) else 0
        if max_tokens_per_batch is not None and max_tokens_per_batch < longest:
            raise ValueError(
                f"max_tokens_per_batch ({max_tokens_per_batch}) is smaller than the longest sample "
                f"({longest} tokens); set max_tokens_per_batch >= {longest} or leave it None"
            )
        if num_replicas is None or rank is None:
            dist_ok = torch.distributed.is_available() and torch.distributed.is_initialized()
            if num_replicas is None:
                num_replicas = torch.distributed.get_world_size() if dist_ok else 1
            if rank is None:
                rank = torch.distributed.get_rank() if dist_ok else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank ({rank}) must be in [0, num_replicas={num_replicas})")
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.shuffle = shuffle
        self.bucket = bucket
        self.pool_factor = pool_factor
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.sampler = _EpochForwarder(self)
        self._cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (re-seeds the shuffling: batches differ between epochs, same on all ranks)."""
        self.epoch = int(epoch)

    def _all_batches(self) -> list[list[int]]:
        n = len(self.lengths)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            perm = rng.permutation(n)
            if self.bucket:
                pool = self.pool_factor * self.batch_size
                batches: list[list[int]] = []
                for start in range(0, n, pool):
                    chunk = perm[start : start + pool]
                    chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
                    batches.extend(_cut_batches(chunk, self.lengths, self.batch_size, self.max_tokens_per_batch))
            else:
                batches = _cut_batches(perm, self.lengths, self.batch_size, self.max_tokens_per_batch)
            batches = [batches[i] for i in rng.permutation(len(batches))]
        else:
            order = np.argsort(self.lengths, kind="stable") if self.bucket else np.arange(n)
            batches = _cut_batches(order, self.lengths, self.batch_size, self.max_tokens_per_batch)
        return batches

    def batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch (cached per epoch), as lists of indices."""
        key = self.epoch if self.shuffle else -1
        if self._cache is None or self._cache[0] != key:
            batches = self._all_batches()
            if self.num_replicas > 1 and batches:
                n = len(batches)
                total = math.ceil(n / self.num_replicas) * self.num_replicas
                batches = [batches[i] if i < n else [Repeat(j) for j in batches[i % n]]
                           for i in range(total)][self.rank :: self.num_replicas]
            self._cache = (key, batches)
        return self._cache[1]

    def skip_batches(self, epoch: int, n: int) -> None:
        """Resume inside an epoch: the next iteration over ``epoch`` starts after its first ``n`` batches
        (``len()`` still counts the whole epoch, as Lightning's loop expects). Other epochs are unaffected."""
        self._resume = (int(epoch), int(n))

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches()
        resume, self._resume = getattr(self, "_resume", None), None
        start = resume[1] if resume is not None and resume[0] == self.epoch else 0
        if start:
            logger.info("resuming epoch %d after its first %d of %d batches", self.epoch, start, len(batches))
        yield from (list(b) for b in batches[start:])

    def __len__(self) -> int:
        return len(self.batches())


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int] | np.ndarray) -> float:
    """Fraction of padded positions when each batch is padded to its longest sample.

    Args:
        batches: lists of sample indices.
        lengths: (num_samples,) sequence lengths.

    Returns:
        ``sum(B * N - sum(L_i)) / sum(B * N)`` over the batches, a float in [0, 1) (0.0 if empty).
    """
    lengths = np.asarray(lengths)
    total = real = 0
    for b in batches:
        ls = lengths[np.asarray(b, dtype=np.int64)]
        total += len(b) * int(ls.max())
        real += int(ls.sum())
    return 0.0 if total == 0 else (total - real) / total


class ListOpsDataModule(LongDocDataModule):
    """LightningDataModule for LRA ListOps (Tay et al. 2021, section 3.1; 10 classes).

    ``prepare_data()`` generates and caches the splits with LRA's generator
    (:func:`~longdoc.data.listops.load_or_generate_listops`, LRA ``lra_benchmarks/data/listops.py``)
    or checks that LRA's released files exist under ``path``. ``setup()`` loads the three splits and
    tokenises them as LRA's ``lra_benchmarks/listops/input_pipeline.py`` (optionally prepending
    ``<cls>``); token-id lists are stored unpadded and padded per batch by :class:`ListOpsCollator`.

    Batches (dicts), with ``N`` the longest sample in the batch (CLS included):
        ``input_ids`` LongTensor (B, N), ``padding_mask`` BoolTensor (B, N) (True = real token),
        ``global_attention_mask`` BoolTensor (B, N) (True at the CLS position 0; all False when
        ``add_cls=False``), ``labels`` LongTensor (B,) in 0..9.

    Args:
        path: directory with LRA's released ``basic_{train,val,test}.tsv`` (``lra_release.gz``,
            folder ``lra_release/listops-1000``); ``None`` generates the data instead.
        cache_dir: where generated splits are cached (relative paths are relative to the CWD).
        num_train, num_val, num_test: generated split sizes (> 0; ignored with ``path``).
        min_length, max_length: exclusive length bounds in tokens (LRA: 500, 2000; default 50, 500).
        max_depth, max_args: LRA tree parameters (10, 10).
        seed: generation seed, also the base seed of the batch shuffling.
        batch_size: maximum samples per batch (> 0).
        max_tokens_per_batch: optional cap on ``B * N`` per batch (>= the longest sample).
        num_workers: DataLoader workers.
        bucket_by_length: bucket training batches by length and sort evaluation batches by length;
            ``False`` gives random (train) / file-order (eval) batches.
        add_cls: prepend ``<cls>`` to every sample.

    Raises:
        ValueError: ``min_length >= max_length``; non-positive sizes, ``batch_size`` or
            ``max_tokens_per_batch``; negative ``num_workers``; at ``setup``, ``max_tokens_per_batch``
            smaller than the longest sample.
        FileNotFoundError: (``prepare_data``/``setup``) missing LRA files under ``path``.
    """

    display_name = "ListOps"

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike = "data/cache",
        num_train: int = 20000,
        num_val: int = 1000,
        num_test: int = 1000,
        min_length: int = 50,
        max_length: int = 500,
        max_depth: int = 10,
        max_args: int = 10,
        seed: int = 0,
        batch_size: int = 32,
        max_tokens_per_batch: int | None = None,
        num_workers: int = 0,
        bucket_by_length: bool = True,
        add_cls: bool = True,
    ):
        if min_length >= max_length:
            raise ValueError(
                f"min_length ({min_length}) must be < max_length ({max_length}) (lengths are kept when "
                "min_length < length < max_length); lower data.min_length or raise data.max_length"
            )
        for name, value in (
            ("num_train", num_train),
            ("num_val", num_val),
            ("num_test", num_test),
            ("max_depth", max_depth),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value}; set data.{name} > 0")
        if max_args < 2:
            raise ValueError(f"max_args must be >= 2 (an operator has at least 2 arguments), got {max_args}")
        super().__init__(batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch, num_workers=num_workers,
                         bucket_by_length=bucket_by_length, add_cls=add_cls, seed=seed)
        self.save_hyperparameters(logger=False)
        self.path = path
        self.cache_dir = cache_dir
        self.num_train = num_train
        self.num_val = num_val
        self.num_test = num_test
        self.min_length = min_length
        self.max_length = max_length
        self.max_depth = max_depth
        self.max_args = max_args

    # ----------------------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        """Vocabulary size (18: ``<pad>``, ``<cls>``, ``<unk>`` + 15 ListOps tokens)."""
        return VOCAB_SIZE

    @property
    def num_classes(self) -> int:
        """Number of classes (10: the values 0-9)."""
        return NUM_CLASSES

    def _max_seq_len_bound(self) -> int:
        """``max_length + 1`` with ``add_cls`` (``max_length`` without): generated lengths are < ``max_length``."""
        return self.max_length + int(self.add_cls)

    # ----------------------------------------------------------------------------- data
    def _generation_kwargs(self) -> dict[str, Any]:
        return dict(
            num_train=self.num_train,
            num_val=self.num_val,
            num_test=self.num_test,
            min_length=self.min_length,
            max_length=self.max_length,
            max_depth=self.max_depth,
            max_args=self.max_args,
            seed=self.seed,
        )

    def _load_rows(self) -> dict[str, list[Row]]:
        if self.path is not None:
            return load_listops_from_path(self.path)
        return load_or_generate_listops(self.cache_dir, **self._generation_kwargs())

    def prepare_data(self) -> None:
        """Generate and cache the splits (or check/read LRA's files under ``path``). Called by
        Lightning on one process per node.

        Raises:
            FileNotFoundError: missing LRA files under ``path``.
        """
        self._load_rows()

    def _build_datasets(self) -> dict[str, ListOpsDataset]:
        """Tokenise the three splits as LRA's ``lra_benchmarks/listops/input_pipeline.py``."""
        rows = self._load_rows()
        # One small uint8 array per sample keeps peak memory low (LRA size: ~10^8 tokens).
        return {split: ListOpsDataset([np.array(encode_listops(src, add_cls=self.add_cls), dtype=np.uint8)
                                       for src, _ in rows[split]], [y for _, y in rows[split]])
                for split in SPLITS}
