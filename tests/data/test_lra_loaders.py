"""LRA loaders (text, retrieval, image, pathfinder) and the shared base data module.

Each loader reads a tiny fixture written in its official format (tests/data/fixtures.py); batches
are checked against the batch contract and against values computed here by hand (bytes of known
texts, grayscale of known pixels, labels), and missing data must raise errors naming the config key.
"""

from __future__ import annotations

import logging

import hydra
import numpy as np
import pytest
import torch

from longdoc.data import (
    DataNotFoundError,
    LengthBucketBatchSampler,
    ListOpsDataModule,
    LongDocDataModule,
    LRAImageDataModule,
    LRAPathfinderDataModule,
    LRARetrievalDataModule,
    LRATextDataModule,
    PaddingCollator,
    lra_pathfinder,
    rgb_to_grayscale,
)

from .fixtures import IMDB_REVIEWS, write_aan, write_aclimdb, write_cifar10, write_imdb_tables, write_pathfinder

CLS, OFF = 1, 2


def byte_ids(data: bytes, cls: bool = True) -> list[int]:
    return ([CLS] if cls else []) + [b + OFF for b in data]


def batches(dm, split):
    """[(dataset indices, batch)] of one pass over ``split``'s loader."""
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}[split]()
    return list(zip(loader.batch_sampler.batches(), loader, strict=True))


def check_contract(batch, docs=("",)):
    b = batch["labels"].shape[0]
    assert batch["labels"].dtype == torch.long and batch["labels"].shape == (b,)
    for sfx in docs:
        ids, pm, gm = batch["input_ids" + sfx], batch["padding_mask" + sfx], batch["global_attention_mask" + sfx]
        assert ids.dtype == torch.long and pm.dtype == torch.bool and gm.dtype == torch.bool
        assert ids.shape == pm.shape == gm.shape and ids.shape[0] == b
        assert pm[:, 0].all() and pm.any(dim=0).all()  # right padding; N = longest in batch
        assert (ids[~pm] == 0).all()
        assert gm[:, 0].all() and not gm[:, 1:].any()


def rows_of(dm, split, docs=("",)):
    """{dataset index: (token ids per document..., label)} from one pass over the loader."""
    out = {}
    for idx, batch in batches(dm, split):
        check_contract(batch, docs)
        for r, i in enumerate(idx):
            ids = tuple(tuple(batch["input_ids" + s][r][batch["padding_mask" + s][r]].tolist()) for s in docs)
            out[i] = (*ids, int(batch["labels"][r]))
    assert sorted(out) == list(range(len(dm.datasets[split])))  # every sample exactly once
    return out


# ------------------------------------------------------------------------------------------- base
class _ListOpsViaBase(LongDocDataModule):
    """ListOps through a bare LongDocDataModule subclass: its batches must equal ListOpsDataModule's."""

    display_name = "ListOps"

    def __init__(self, inner: ListOpsDataModule, **kw):
        super().__init__(**kw)
        self.inner = inner

    vocab_size = property(lambda self: self.inner.vocab_size)
    num_classes = property(lambda self: self.inner.num_classes)

    def _max_seq_len_bound(self):
        return self.inner.max_length + int(self.add_cls)

    def _build_datasets(self):
        self.inner.setup()
        return dict(self.inner.datasets)


def test_base_reproduces_listops_batches(tmp_path):
    kw = dict(batch_size=16, max_tokens_per_batch=None, num_workers=0, bucket_by_length=True, add_cls=True, seed=3)
    ref = ListOpsDataModule(cache_dir=str(tmp_path), num_train=120, num_val=30, num_test=30, min_length=10,
                            max_length=60, **kw)
    ref.prepare_data()
    ref.setup()
    ours = _ListOpsViaBase(ListOpsDataModule(cache_dir=str(tmp_path), num_train=120, num_val=30, num_test=30,
                                             min_length=10, max_length=60, **kw), **kw)
    assert ours.max_seq_len == ours.inner.max_seq_len == 61  # the bound before setup
    ours.setup()
    assert ours.max_seq_len == ref.max_seq_len and ours.majority_class_accuracy == ref.majority_class_accuracy
    for split in ("train", "val", "test"):
        for epoch in (0, 1):
            a_loader = getattr(ref, f"{split}_dataloader")()
            b_loader = getattr(ours, f"{split}_dataloader")()
            a_loader.batch_sampler.set_epoch(epoch)
            b_loader.batch_sampler.set_epoch(epoch)
            pairs = list(zip(a_loader, b_loader, strict=True))
            assert pairs
            for a, b in pairs:
                assert list(a) == list(b)
                assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    # resume mid-epoch works the same way
    ref.load_state_dict({"epoch": 0, "batches_done": 2})
    ours.load_state_dict({"epoch": 0, "batches_done": 2})
    for a, b in zip(ref.train_dataloader(), ours.train_dataloader(), strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"])


def test_padding_collator_pads_listops_items_by_hand():
    items = [{"input_ids": np.array(ids, dtype=np.uint8), "label": y}
             for ids, y in (([1, 3, 9, 7], 2), ([1, 6, 8, 10, 12, 7], 0), ([1], 9))]
    ids = [[1, 3, 9, 7, 0, 0], [1, 6, 8, 10, 12, 7], [1, 0, 0, 0, 0, 0]]
    mask = [[True] * 4 + [False] * 2, [True] * 6, [True] + [False] * 5]
    for has_cls in (True, False):
        expected = {"input_ids": torch.tensor(ids), "padding_mask": torch.tensor(mask),
                    "global_attention_mask": torch.tensor([[has_cls] + [False] * 5] * 3),
                    "labels": torch.tensor([2, 0, 9])}
        got = PaddingCollator(0, has_cls)(items)
        assert list(got) == list(expected)
        assert all(torch.equal(got[k], expected[k]) and got[k].dtype == expected[k].dtype for k in got)
    with pytest.raises(ValueError):
        PaddingCollator()([])


def test_base_errors():
    with pytest.raises(ValueError, match="data.batch_size"):
        LRATextDataModule(path="x", batch_size=0)
    with pytest.raises(ValueError, match="max_tokens_per_batch"):
        LRATextDataModule(path="x", max_tokens_per_batch=0)
    dm = LRATextDataModule(path="x")
    with pytest.raises(AttributeError):
        _ = dm.majority_class_accuracy
    assert getattr(dm, "majority_class_accuracy", None) is None
    with pytest.raises(RuntimeError, match="setup"):
        dm.train_dataloader()
    assert isinstance(LengthBucketBatchSampler([1, 2], 1), LengthBucketBatchSampler)


# ------------------------------------------------------------------------------------------- LRA text
def test_lra_text_aclimdb_bytes_labels_truncation(tmp_path, caplog):
    root = write_aclimdb(tmp_path)
    dm = LRATextDataModule(path=str(root), max_length=30, val_fraction=0.2, batch_size=3, seed=0)
    assert (dm.task, dm.vocab_size, dm.num_classes, dm.pad_id, dm.cls_id, dm.max_seq_len) == ("classification", 258, 2, 0, 1, 31)
    with caplog.at_level(logging.INFO, logger="longdoc.data"):
        dm.prepare_data()
        dm.setup()
    got = {s: rows_of(dm, s) for s in ("train", "val", "test")}
    assert (len(got["train"]), len(got["val"]), len(got["test"])) == (8, 2, 4)
    expect = {s: sorted((tuple(byte_ids(t.encode()[:30])), y) for t, y in IMDB_REVIEWS[s]) for s in ("train", "test")}
    assert sorted(got["train"].values()) + sorted(got["val"].values()) != []
    assert sorted(list(got["train"].values()) + list(got["val"].values())) == expect["train"]
    assert sorted(got["test"].values()) == expect["test"]
    # a known review, by hand: CLS, then 'A' (65) + 2 = 67, ...; label positive
    known = tuple([1, 67, 34] + [b + 2 for b in b"wonderful film.<br /><br />L"])
    assert (known, 1) in list(got["train"].values()) + list(got["val"].values())
    assert dm.max_seq_len == 31
    n_cut = sum(len(t.encode()) > 30 for t, _ in IMDB_REVIEWS["test"])
    assert f"test: {n_cut} of 4 reviews truncated to max_length=30 bytes" in caplog.text
    assert 0.0 <= dm.majority_class_accuracy <= 1.0


@pytest.mark.parametrize("fmt,string_labels", [("csv", True), ("jsonl", False)])
def test_lra_text_tables_and_val_equals_test(tmp_path, fmt, string_labels):
    root = write_imdb_tables(tmp_path / fmt, fmt, string_labels=string_labels)
    dm = LRATextDataModule(path=str(root), max_length=4000, val_fraction=0.0, batch_size=4)
    dm.setup()
    test = rows_of(dm, "test")
    assert rows_of(dm, "val") == test  # val_fraction=0: LRA validates on the test set
    assert sorted(test.values()) == sorted((tuple(byte_ids(t.encode())), y) for t, y in IMDB_REVIEWS["test"])


def test_lra_text_hf_source_and_errors(tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load(name, config=None, **kw):
        calls.append(name)
        return datasets.DatasetDict({s: datasets.Dataset.from_dict({"text": [t for t, _ in r], "label": [y for _, y in r]})
                                     for s, r in IMDB_REVIEWS.items()})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    dm = LRATextDataModule(path=None, val_fraction=0.1, batch_size=4)
    dm.prepare_data()
    dm.setup()
    assert calls == ["imdb"]
    assert sorted(rows_of(dm, "test").values()) == sorted((tuple(byte_ids(t.encode())), y) for t, y in IMDB_REVIEWS["test"])

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'imdb' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataNotFoundError, match=r"data\.path.*aclImdb"):
        LRATextDataModule(path=None).prepare_data()
    with pytest.raises(DataNotFoundError, match=r"data\.path="):
        LRATextDataModule(path=str(tmp_path / "missing")).setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match=r"data\.path=.*aclImdb"):
        LRATextDataModule(path=str(tmp_path / "empty")).setup()


# ------------------------------------------------------------------------------------------- retrieval
@pytest.mark.parametrize("unescape", [False, True])
def test_lra_retrieval_pairs(tmp_path, unescape):
    rows = write_aan(tmp_path)
    dm = LRARetrievalDataModule(path=str(tmp_path), max_length=40, unescape=unescape, batch_size=3)
    assert (dm.task, dm.vocab_size, dm.num_classes, dm.max_seq_len) == ("retrieval", 258, 2, 41)
    dm.prepare_data()
    dm.setup()
    for split in ("train", "val", "test"):
        got = rows_of(dm, split, docs=("", "_2"))
        for i, (label, _, _, t1, t2) in enumerate(rows[split]):
            # LRA feeds the field verbatim (the b'...' literal); unescape gives the raw bytes
            e1, e2 = (t1, t2) if unescape else (repr(t1).encode(), repr(t2).encode())
            assert got[i] == (tuple(byte_ids(e1[:40])), tuple(byte_ids(e2[:40])), int(float(label)))
    assert dm.max_seq_len == 41
    # the file prefix (LRA's DATASET_PATHS style) works too
    dm2 = LRARetrievalDataModule(path=str(tmp_path / "tsv_data" / "new_aan_pairs"), max_length=40)
    dm2.setup()
    assert len(dm2.datasets["test"]) == 5


def test_lra_retrieval_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"data\.path.*new_aan_pairs"):
        LRARetrievalDataModule(path=None).prepare_data()
    with pytest.raises(DataNotFoundError, match=r"data\.path=.*new_aan_pairs\.train\.tsv"):
        LRARetrievalDataModule(path=str(tmp_path)).setup()
    write_aan(tmp_path)
    (tmp_path / "tsv_data" / "new_aan_pairs.eval.tsv").write_bytes(b"1\tW1\tP1\tb'only four'\n")
    with pytest.raises(ValueError, match=r"new_aan_pairs\.eval\.tsv:1: expected 5"):
        LRARetrievalDataModule(path=str(tmp_path)).setup()


# ------------------------------------------------------------------------------------------- image
def test_grayscale_formulas_by_hand():
    px = np.array([[0, 3, 0], [200, 100, 50], [255, 255, 255], [255, 0, 0], [0, 0, 0]], dtype=np.uint8)
    # tf: floor(255.5 * (0.2989 R + 0.5870 G + 0.1140 B) / 255): 1.764 -> 1, 124.42 -> 124, 255.47 -> 255, 76.37 -> 76
    assert rgb_to_grayscale(px, "tf").tolist() == [1, 124, 255, 76, 0]
    # PIL "L": rounded 0.299 R + 0.587 G + 0.114 B: 1.761 -> 2, 124.2 -> 124, 255, 76.2 -> 76
    assert rgb_to_grayscale(px, "pil").tolist() == [2, 124, 255, 76, 0]
    from PIL import Image

    img = np.random.default_rng(0).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    assert np.array_equal(rgb_to_grayscale(img, "pil"), np.asarray(Image.fromarray(img).convert("L")))
    ref = np.floor(255.5 * (img.astype(np.float64) @ [0.2989, 0.5870, 0.1140]) / 255)
    assert np.abs(rgb_to_grayscale(img, "tf").astype(int) - ref).max() <= 1


@pytest.mark.parametrize("grayscale", ["tf", "pil"])
def test_lra_image_cifar_pickles(tmp_path, grayscale):
    data = write_cifar10(tmp_path)  # 5 x 4 training images, 6 test images
    dm = LRAImageDataModule(path=str(tmp_path), grayscale=grayscale, batch_size=5)
    assert (dm.vocab_size, dm.num_classes, dm.max_seq_len) == (258, 10, 1025)
    dm.prepare_data()
    dm.setup()
    train, val, test = (rows_of(dm, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (18, 2, 6)  # LRA: train[:90%], train[90%:]
    first = train[0][0]
    assert len(first) == 1025 and first[0] == CLS
    # image 0 of data_batch_1: pixel (row 0, col 1) = (0, 3, 0); pixel (row 2, col 5) = (200, 100, 50)
    assert first[1 + 0 * 32 + 1] == (1 if grayscale == "tf" else 2) + OFF
    assert first[1 + 2 * 32 + 5] == 124 + OFF
    x, y = data["train"]
    for i in (0, 7, 17):
        assert train[i] == (tuple([CLS] + (rgb_to_grayscale(x[i], grayscale).reshape(-1) + OFF).tolist()), int(y[i]))
    for i in range(2):
        assert val[i][1] == int(y[18 + i])
    assert [test[i][1] for i in range(6)] == data["test"][1].tolist()


def test_lra_image_hf_source_and_errors(tmp_path, monkeypatch):
    import datasets
    from PIL import Image

    imgs = np.random.default_rng(2).integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    feats = datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")})

    def fake_load(name, config=None, **kw):
        assert name == "cifar10"
        def part(a, b):
            return datasets.Dataset.from_dict(
                {"img": [Image.fromarray(im) for im in imgs[a:b]], "label": list(range(a, b))}, features=feats)

        return datasets.DatasetDict({"train": part(0, 10), "test": part(10, 12)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    dm = LRAImageDataModule(path=None, batch_size=4)
    dm.setup()
    got = rows_of(dm, "test")
    assert got[1] == (tuple([CLS] + (rgb_to_grayscale(imgs[11]).reshape(-1) + OFF).tolist()), 11)
    with pytest.raises(DataNotFoundError, match=r"data\.path=.*data_batch_1"):
        LRAImageDataModule(path=str(tmp_path)).prepare_data()
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("offline")))
    with pytest.raises(DataNotFoundError, match=r"data\.path.*cifar-10-batches-py"):
        LRAImageDataModule(path=None).prepare_data()


# ------------------------------------------------------------------------------------------- pathfinder
def test_lra_pathfinder_layout_split_and_cache(tmp_path, monkeypatch):
    root = tmp_path / "pathfinder32"
    images, labels = write_pathfinder(root, n=30, empty=(5,))
    kw = dict(path=str(root), difficulty="hard", resolution=32, cache_dir=str(tmp_path / "cache"), batch_size=8, seed=0)
    dm = LRAPathfinderDataModule(**kw)
    assert (dm.vocab_size, dm.num_classes, dm.max_seq_len) == (258, 2, 1025)
    dm.prepare_data()
    dm.setup()
    sizes = {s: len(dm.datasets[s].row_index) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 29  # the empty image is dropped, as LRA does
    assert abs(sizes["train"] - 24) <= 1 and abs(sizes["val"] - 3) <= 1 and abs(sizes["test"] - 3) <= 1
    seen = []
    got = {}
    for split in ("train", "val", "test"):
        rows = rows_of(dm, split)
        for i, (ids, y) in rows.items():
            j = int(dm.datasets[split].row_index[i])  # metadata row
            seen.append(j)
            assert ids == tuple([CLS] + (images[j].reshape(-1).astype(int) + OFF).tolist())
            assert y == labels[j]  # column 3 of the metadata line
            got[j] = ids
    assert sorted(seen) == [j for j in range(30) if j != 5]
    assert got[0][1 + 3 * 32 + 7] == 42 + OFF  # the pixel written at row 3, column 7
    assert len(list((tmp_path / "cache").glob("*.pixels.npy"))) == 1
    # a second module re-uses the decoded cache (no PNG decoding) and gives the same batches
    monkeypatch.setattr(lra_pathfinder, "decode_pathfinder_images", lambda *a, **k: pytest.fail("cache not used"))
    dm2 = LRAPathfinderDataModule(**kw)
    dm2.setup()
    a, b = next(iter(dm.val_dataloader())), next(iter(dm2.val_dataloader()))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_lra_pathfinder_npy_metadata_pathx_and_errors(tmp_path):
    root = tmp_path / "pathfinder128"
    images, labels = write_pathfinder(root, n=10, resolution=128, folder="curv_baseline", npy_metadata=True, empty=())
    dm = LRAPathfinderDataModule(path=str(root), difficulty="easy", resolution=128, batch_size=4)
    assert dm.max_seq_len == 128 * 128 + 1  # Path-X: 16384 pixels + CLS
    dm.setup()
    rows = rows_of(dm, "test")
    i, (ids, y) = next(iter(rows.items()))
    j = int(dm.datasets["test"].row_index[i])
    assert len(ids) == 16385 and ids[1:] == tuple((images[j].reshape(-1).astype(int) + OFF).tolist()) and y == labels[j]
    with pytest.raises(ValueError, match=r"data\.resolution"):
        LRAPathfinderDataModule(path=str(root), difficulty="easy", resolution=32).setup()
    with pytest.raises(DataNotFoundError, match=r"data\.path"):
        LRAPathfinderDataModule(path=None).prepare_data()
    with pytest.raises(DataNotFoundError, match=r"data\.difficulty"):
        LRAPathfinderDataModule(path=str(root), difficulty="hard").prepare_data()
    (root / "curv_baseline" / "imgs" / "0" / "sample_1.png").unlink()
    with pytest.raises(DataNotFoundError, match=r"1 image files .* missing"):
        LRAPathfinderDataModule(path=str(root), difficulty="easy", resolution=128).setup()


# ------------------------------------------------------------------------------------------- configs
def test_lra_configs_instantiate(tmp_path, compose_cfg, data_dir):
    write_aclimdb(tmp_path / "imdb")
    write_aan(tmp_path / "aan")
    write_cifar10(tmp_path / "cifar")
    write_pathfinder(tmp_path / "pf", n=10)
    cases = {
        "lra_text": (LRATextDataModule, tmp_path / "imdb"),
        "lra_retrieval": (LRARetrievalDataModule, tmp_path / "aan"),
        "lra_image": (LRAImageDataModule, tmp_path / "cifar"),
        "lra_pathfinder": (LRAPathfinderDataModule, tmp_path / "pf"),
    }
    for name, (cls, path) in cases.items():
        cfg = compose_cfg(f"data={name}", f"data.path={path}", "data.batch_size=4", tiny=False)
        dm = hydra.utils.instantiate(cfg.data)
        assert type(dm) is cls and dm.batch_size == 4
        if hasattr(dm, "cache_dir") and dm.cache_dir is not None:
            assert str(dm.cache_dir).startswith(str(data_dir))
        dm.setup()
        check_contract(next(iter(dm.val_dataloader())), ("", "_2") if dm.task == "retrieval" else ("",))
