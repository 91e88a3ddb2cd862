"""Batch samplers of the data modules: one rank-sharding, resumable base and two batch-list builders.

:class:`ShardedBatchSampler` holds what every batch sampler of ``longdoc.data`` does: distributed
sharding (``num_replicas`` / ``rank``, from ``torch.distributed`` when initialised), ``set_epoch``
(reached by Lightning through ``batch_sampler.sampler``), the per-epoch batch cache, mid-epoch resume
(:meth:`~ShardedBatchSampler.skip_batches`), ``__iter__`` and ``__len__``. A subclass only builds
the epoch's global batch list (:meth:`~ShardedBatchSampler.global_batches`), the same on every rank:

* :class:`LengthBucketBatchSampler`: length-bucketed (or plain) batches over a dataset, shuffled
  per epoch for training, deterministic for evaluation;
* :class:`RandomWindowBatchSampler`: batches of random window starts for language modelling.

Sharding: the global batch list is padded cyclically to a multiple of ``num_replicas`` (the indices of
the repeated batches are :class:`Repeat` objects) and rank ``r`` keeps batches ``r, r + num_replicas, ...``,
so every rank gets the same number of batches (DDP needs it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

logger = logging.getLogger("longdoc.data")

__all__ = [
    "Repeat",
    "ShardedBatchSampler",
    "LengthBucketBatchSampler",
    "RandomWindowBatchSampler",
    "padding_fraction",
]


class Repeat(int):
    """A dataset index that a distributed batch sampler repeats so that every rank gets the same number of batches
    (DDP needs it). The sample is fetched as usual, but :class:`~longdoc.data.base.RepeatMarkingDataset` marks it
    and :class:`~longdoc.data.base.PaddingCollator` gives it the label
    :data:`~longdoc.data.base.IGNORE_INDEX`, so no loss or metric counts it twice."""

    __slots__ = ()


class _EpochForwarder:
    """Exposed as ``batch_sampler.sampler`` so that Lightning's ``_set_sampler_epoch`` (which calls
    ``set_epoch`` on ``dataloader.batch_sampler.sampler``) reaches the batch sampler."""

    def __init__(self, owner: ShardedBatchSampler):
        self._owner = owner

    def set_epoch(self, epoch: int) -> None:
        self._owner.set_epoch(epoch)


class ShardedBatchSampler(Sampler):
    """Base batch sampler: rank sharding, epochs, a per-epoch batch cache and mid-epoch resume.

    Subclasses implement :meth:`global_batches` (the epoch's batches over all ranks, identical on every
    rank) and may set :attr:`epoch_dependent` to ``False`` when the batches do not change between epochs.

    Args:
        seed: base seed of the subclass's draws; the epoch is added via :meth:`set_epoch`.
        num_replicas, rank: distributed sharding (default: from ``torch.distributed`` when it is
            initialised, else 1 and 0).

    Attributes:
        epoch: the current epoch (``int``, 0 until :meth:`set_epoch`).
        sampler: an object whose ``set_epoch`` calls this sampler's (Lightning calls
            ``batch_sampler.sampler.set_epoch``).

    Yields:
        Lists of dataset indices (``int``; :class:`Repeat` for the samples of repeated batches), one per batch.

    Raises:
        ValueError: ``rank`` not in ``[0, num_replicas)``.
    """

    #: Whether the batches depend on the epoch (if not, one cached list serves every epoch).
    epoch_dependent: bool = True

    def __init__(self, *, seed: int = 0, num_replicas: int | None = None, rank: int | None = None):
        if num_replicas is None or rank is None:
            dist_ok = torch.distributed.is_available() and torch.distributed.is_initialized()
            if num_replicas is None:
                num_replicas = torch.distributed.get_world_size() if dist_ok else 1
            if rank is None:
                rank = torch.distributed.get_rank() if dist_ok else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank ({rank}) must be in [0, num_replicas={num_replicas})")
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.sampler = _EpochForwarder(self)
        self._cache: tuple[int, list[list[int]]] | None = None
        self._resume: tuple[int, int] | None = None

    def global_batches(self) -> list[list[int]]:
        """The batches of the current epoch over all ranks (the same list on every rank)."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (re-seeds the subclass's draws: batches differ between epochs, same on all ranks)."""
        self.epoch = int(epoch)

    def batches(self) -> list[list[int]]:
        """This rank's batches of the current epoch (cached per epoch), as lists of indices.

        With ``num_replicas > 1`` the global list is padded cyclically to a multiple of ``num_replicas``
        (the padding batches hold :class:`Repeat` indices) and this rank keeps every
        ``num_replicas``-th batch from ``rank`` on.
        """
        key = self.epoch if self.epoch_dependent else -1
        if self._cache is None or self._cache[0] != key:
            batches = self.global_batches()
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
        resume, self._resume = self._resume, None
        start = resume[1] if resume is not None and resume[0] == self.epoch else 0
        if start:
            logger.info("resuming epoch %d after its first %d of %d batches", self.epoch, start, len(batches))
        yield from (list(b) for b in batches[start:])

    def __len__(self) -> int:
        return len(self.batches())


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


class LengthBucketBatchSampler(ShardedBatchSampler):
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

    Distributed (see :class:`ShardedBatchSampler`): every rank builds the same batch list, padded
    cyclically to a multiple of ``num_replicas``; rank ``r`` takes batches ``r, r + num_replicas, ...``.
    The indices of the repeated batches are :class:`Repeat` objects: the data module marks those samples
    and the collator ignores their labels, so every sample is counted exactly once in losses and
    metrics. With Lightning and several devices, set ``Trainer(use_distributed_sampler=False)``:
    Lightning cannot inject its own sampler into a custom batch sampler.

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
        super().__init__(seed=seed, num_replicas=num_replicas, rank=rank)
        self.batch_size = batch_size
        self.max_tokens_per_batch = max_tokens_per_batch
        self.shuffle = shuffle
        self.bucket = bucket
        self.pool_factor = pool_factor

    @property
    def epoch_dependent(self) -> bool:  # type: ignore[override]
        """Training batches (``shuffle``) change every epoch; evaluation batches do not."""
        return self.shuffle

    def global_batches(self) -> list[list[int]]:
        """The epoch's batches over all ranks: shuffled length pools (training) or one sorted pass (evaluation)."""
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


class RandomWindowBatchSampler(ShardedBatchSampler):
    """Batches of random window starts for language-model training (seeded, new each epoch).

    Each epoch draws ``ceil(num_batches / num_replicas) * num_replicas`` batches of ``batch_size``
    starts uniformly from ``[0, num_starts)`` with ``np.random.default_rng([seed, epoch])``, every rank
    the same; rank ``r`` keeps batches ``r, r + num_replicas, ...`` (all fresh draws, no
    :class:`Repeat`). Resume, epochs and sharding: see :class:`ShardedBatchSampler`.

    Args:
        num_starts: number of valid window starts (``len(ByteWindowDataset)``), > 0.
        batch_size: windows per batch, > 0.
        num_batches: batches per epoch (over all ranks), > 0.
        seed: base seed; the epoch is added via :meth:`set_epoch`.
        num_replicas, rank: distributed sharding (default: from ``torch.distributed``, else 1, 0).

    Yields:
        Lists of ``int`` window starts.

    Raises:
        ValueError: non-positive sizes, or ``rank`` outside ``[0, num_replicas)``.
    """

    def __init__(
        self,
        num_starts: int,
        batch_size: int,
        num_batches: int,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        for name, value in (("num_starts", num_starts), ("batch_size", batch_size), ("num_batches", num_batches)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        super().__init__(seed=seed, num_replicas=num_replicas, rank=rank)
        self.num_starts, self.batch_size, self.num_batches = int(num_starts), int(batch_size), int(num_batches)

    def global_batches(self) -> list[list[int]]:
        """``ceil(num_batches / num_replicas) * num_replicas`` batches of random starts (over all ranks)."""
        total = math.ceil(self.num_batches / self.num_replicas) * self.num_replicas
        rng = np.random.default_rng([self.seed, self.epoch])
        return rng.integers(0, self.num_starts, size=(total, self.batch_size)).tolist()


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
