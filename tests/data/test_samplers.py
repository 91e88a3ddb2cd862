"""The batch samplers' shared sharding: cyclic padding of the batch list with marked repeats (and what the
data module does with them), fresh random windows on every rank, epochs reached through ``.sampler``."""

from __future__ import annotations

import logging

import pytest
import torch

from longdoc.data import LengthBucketBatchSampler, ListOpsDataModule, RandomWindowBatchSampler
from longdoc.data.samplers import Repeat


def as_plain(batches):
    """Batches as lists of (index, repeated?) pairs."""
    return [[(int(i), isinstance(i, Repeat)) for i in b] for b in batches]


def test_length_buckets_padded_to_a_multiple_of_the_ranks_with_marked_repeats():
    lengths = [5, 3, 8, 1, 9, 2, 7]
    # sorted by length: 3 (1), 5 (2), 1 (3), 0 (5), 6 (7), 2 (8), 4 (9) -> batches [3, 5] [1, 0] [6, 2] [4];
    # 3 ranks need 6 batches: [3, 5] and [1, 0] again, as repeats; rank r takes batches r and r + 3
    expected = {0: [[(3, False), (5, False)], [(4, False)]],
                1: [[(1, False), (0, False)], [(3, True), (5, True)]],
                2: [[(6, False), (2, False)], [(1, True), (0, True)]]}
    for rank, batches in expected.items():
        sampler = LengthBucketBatchSampler(lengths, 2, shuffle=False, num_replicas=3, rank=rank)
        assert as_plain(sampler) == batches and len(sampler) == 2
    single = LengthBucketBatchSampler(lengths, 2, shuffle=False)
    assert as_plain(single) == [[(3, False), (5, False)], [(1, False), (0, False)], [(6, False), (2, False)],
                                [(4, False)]]


def test_repeated_samples_get_ignored_labels_in_the_loader(tmp_path, monkeypatch, caplog):
    rows = [("( ( ( [MAX 2 ) 9 ) ] )", 9), ("( ( ( ( [SM 5 ) 7 ) 1 ) ] )", 3), ("( ( ( ( ( [MIN 4 ) 8 ) 6 ) 5 ) ] )", 4)]
    tsv = "Source\tTarget\r\n" + "".join(f"{s}\t{y}\r\n" for s, y in rows)
    for split in ("train", "val", "test"):
        (tmp_path / f"basic_{split}.tsv").write_text(tsv)
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a, **k: 2)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda *a, **k: 1)
    caplog.set_level(logging.INFO, logger="longdoc.data")
    dm = ListOpsDataModule(path=str(tmp_path), cache_dir=tmp_path / "unused", batch_size=1)
    dm.setup()
    # lengths (with CLS) 5, 6, 7 -> batches [0] [1] [2] + [0] repeated; rank 1 takes [1] and the repeat of [0]
    batches = list(dm.test_dataloader())
    assert [b["input_ids"].tolist() for b in batches] == [[[1, 6, 13, 15, 9, 7]], [[1, 3, 10, 17, 7]]]
    assert [b["labels"].tolist() for b in batches] == [[3], [-100]]
    assert "ListOps test: 1 of this rank's 2 batches repeat samples" in caplog.text


def test_random_windows_are_fresh_draws_on_every_rank():
    shards = [RandomWindowBatchSampler(10**6, 4, 7, seed=1, num_replicas=3, rank=r) for r in range(3)]
    batches = [s.batches() for s in shards]
    assert [len(b) for b in batches] == [3, 3, 3] == [len(s) for s in shards]  # ceil(7 / 3) each
    flat = [tuple(b) for bs in batches for b in bs]
    assert len(set(flat)) == 9  # 9 different batches of 4 starts among 10^6: nothing is repeated
    assert not any(isinstance(i, Repeat) for b in flat for i in b) and all(0 <= i < 10**6 for b in flat for i in b)
    shards[0].sampler.set_epoch(1)  # what Lightning calls
    assert shards[0].epoch == 1 and shards[0].batches() != batches[0]
    shards[0].set_epoch(0)
    assert shards[0].batches() == batches[0]
    with pytest.raises(ValueError, match="rank"):
        RandomWindowBatchSampler(10, 1, 1, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_batches"):
        RandomWindowBatchSampler(10, 1, 0)
