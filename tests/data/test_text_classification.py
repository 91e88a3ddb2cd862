"""TextClassificationDataModule: local CSV / TSV / JSON lines / parquet and HF sources, label
mapping, validation carving, byte and BPE tokenisation (trained once, cached, re-used), errors."""

from __future__ import annotations

import hydra
import pytest
import torch

from longdoc.data import DataNotFoundError, TextClassificationDataModule
from longdoc.data import text_classification as tc

from .fixtures import TOPIC_DOCS, TOPIC_TEST, write_table

CLS, OFF = 1, 2
TOPICS = {"politics": 0, "sports": 1, "tech": 2}  # sorted string labels


def collect(dm, split):
    """{dataset index: (token ids, label)}, checking the batch contract."""
    loader = getattr(dm, f"{split}_dataloader")()
    out = {}
    for idx, batch in zip(loader.batch_sampler.batches(), loader, strict=True):
        ids, pm, gm, y = batch["input_ids"], batch["padding_mask"], batch["global_attention_mask"], batch["labels"]
        assert ids.dtype == y.dtype == torch.long and pm.dtype == gm.dtype == torch.bool
        assert ids.shape == pm.shape == gm.shape and y.shape == (ids.shape[0],)
        assert gm[:, 0].all() and not gm[:, 1:].any() and pm[:, 0].all() and pm.any(0).all()
        for r, i in enumerate(idx):
            out[i] = (tuple(ids[r][pm[r]].tolist()), int(y[r]))
    assert sorted(out) == list(range(len(dm.datasets[split])))
    return out


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_local_files_bytes_labels_and_carved_validation(tmp_path, ext):
    train = write_table(tmp_path / f"train{ext}", TOPIC_DOCS)
    test = write_table(tmp_path / f"test{ext}", TOPIC_TEST)
    dm = TextClassificationDataModule(train_file=str(train), test_file=str(test), val_fraction=0.25, max_length=20,
                                      batch_size=4, seed=1)
    assert (dm.task, dm.vocab_size, dm.max_seq_len) == ("classification", 258, 21)
    assert dm.num_classes == 3  # counted from the training labels before setup
    dm.prepare_data()
    dm.setup()
    assert dm.label_to_id == TOPICS
    tr, va, te = collect(dm, "train"), collect(dm, "val"), collect(dm, "test")
    assert (len(tr), len(va), len(te)) == (9, 3, 3)

    def expect(rows):
        return sorted((tuple([CLS] + [b + OFF for b in t.encode()[:20]]), TOPICS[y]) for t, y in rows)

    assert sorted(list(tr.values()) + list(va.values())) == expect(TOPIC_DOCS)
    assert sorted(te.values()) == expect(TOPIC_TEST)
    # "The coach praised th" (20 bytes) by hand: CLS, 'T' = 84 -> 86, 'h' = 104 -> 106; label sports = 1
    assert (tuple([1, 86, 106] + [b + 2 for b in b"e coach praised th"]), 1) in te.values()


def test_integer_labels_label_names_and_validation_file(tmp_path):
    rows = [(t, {"sports": 7, "politics": 3, "tech": 11}[y]) for t, y in TOPIC_DOCS]
    train = write_table(tmp_path / "train.jsonl", rows)
    val = write_table(tmp_path / "val.jsonl", rows[:3])
    test = write_table(tmp_path / "test.jsonl", rows[3:6])
    dm = TextClassificationDataModule(train_file=str(train), validation_file=str(val), test_file=str(test), batch_size=5)
    dm.setup()
    assert dm.label_to_id == {3: 0, 7: 1, 11: 2}  # numeric order
    assert len(dm.datasets["train"]) == 12 and len(dm.datasets["val"]) == 3
    dm2 = TextClassificationDataModule(train_file=str(train), test_file=str(test), label_names=[11, 7, 3])
    assert dm2.num_classes == 3
    dm2.setup()
    assert dm2.label_to_id == {11: 0, 7: 1, 3: 2}
    got = collect(dm2, "test")
    assert sorted(y for _, y in got.values()) == sorted({11: 0, 7: 1, 3: 2}[y] for _, y in rows[3:6])


def test_bpe_trained_cached_and_reused(tmp_path, monkeypatch):
    train = write_table(tmp_path / "data" / "train.csv", TOPIC_DOCS * 3)
    test = write_table(tmp_path / "data" / "test.csv", TOPIC_TEST)
    kw = dict(train_file=str(train), test_file=str(test), tokenizer="bpe", bpe_vocab_size=300, bpe_min_frequency=2,
              cache_dir=str(tmp_path / "cache"), max_length=64, batch_size=4)
    dm = TextClassificationDataModule(**kw)
    assert dm.vocab_size == 300
    dm.prepare_data()
    dm.setup()
    cached = list((tmp_path / "cache").glob("bpe-*.json"))
    assert len(cached) == 1
    tok = dm._get_tokenizer()
    assert tok.get_vocab_size() <= 300 and tok.token_to_id("<pad>") == 0 and tok.token_to_id("<cls>") == 1
    te = collect(dm, "test")
    for ids, y in te.values():
        assert ids[0] == CLS and max(ids) < 300
        text = tok.decode(list(ids[1:]))
        assert (text, y) in [(t, TOPICS[lab]) for t, lab in TOPIC_TEST]  # byte-level BPE round-trips
    assert len(te[0][0]) - 1 < len(TOPIC_TEST[0][0].encode())  # merges make it shorter than bytes
    # same texts + settings: the cached tokenizer is re-used (training would fail now)
    import tokenizers

    monkeypatch.setattr(tokenizers.trainers, "BpeTrainer", lambda *a, **k: pytest.fail("retrained, cache not re-used"))
    dm2 = TextClassificationDataModule(**kw)
    dm2.setup()
    assert collect(dm2, "test") == te
    assert tc.bpe_cache_key(["a"], 300, 2) != tc.bpe_cache_key(["a"], 301, 2) != tc.bpe_cache_key(["b"], 301, 2)
    # without cache_dir the tokenizer is cached beside train_file
    dm3 = TextClassificationDataModule(**{**kw, "cache_dir": None, "bpe_vocab_size": 280})
    monkeypatch.undo()
    dm3.setup()
    assert len(list((tmp_path / "data").glob("bpe-*.json"))) == 1


def test_hf_source(monkeypatch):
    import datasets

    def fake_load(name, config=None, **kw):
        assert (name, config) == ("org/long-docs", "v2")

        def mk(rows):
            return datasets.Dataset.from_dict({"body": [t for t, _ in rows], "topic": [y for _, y in rows],
                                               "extra": [0] * len(rows)})

        return datasets.DatasetDict({"train": mk(TOPIC_DOCS), "validation": mk(TOPIC_DOCS[:3]), "test": mk(TOPIC_TEST)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    dm = TextClassificationDataModule(hf_name="org/long-docs", hf_config="v2", hf_validation_split="validation",
                                      text_key="body", label_key="topic", batch_size=4)
    dm.setup()
    assert dm.label_to_id == TOPICS and len(dm.datasets["val"]) == 3
    assert sorted(collect(dm, "test").values()) == sorted(
        (tuple([CLS] + [b + OFF for b in t.encode()]), TOPICS[y]) for t, y in TOPIC_TEST)
    bad = TextClassificationDataModule(hf_name="org/long-docs", hf_config="v2", text_key="text", label_key="topic")
    with pytest.raises(ValueError, match=r"no column 'text'.*data\.text_key"):
        bad.setup()
    missing_split = TextClassificationDataModule(hf_name="org/long-docs", hf_config="v2", hf_test_split="eval",
                                                 text_key="body", label_key="topic")
    with pytest.raises(DataNotFoundError, match=r"data\.hf_test_split"):
        missing_split.setup()
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("offline")))
    with pytest.raises(DataNotFoundError, match=r"org/long-docs.*data\.train_file"):
        TextClassificationDataModule(hf_name="org/long-docs").prepare_data()


def test_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"data\.hf_name.*data\.train_file"):
        TextClassificationDataModule()
    train = write_table(tmp_path / "train.csv", TOPIC_DOCS)
    with pytest.raises(DataNotFoundError, match=r"data\.test_file"):
        TextClassificationDataModule(train_file=str(train)).setup()
    with pytest.raises(DataNotFoundError, match=r"data\.test_file=.*does not exist"):
        TextClassificationDataModule(train_file=str(train), test_file=str(tmp_path / "nope.csv")).setup()
    with pytest.raises(ValueError, match=r"data\.tokenizer"):
        TextClassificationDataModule(train_file=str(train), tokenizer="words")
    test = write_table(tmp_path / "test.csv", [("A recipe for bread.", "cooking")])
    with pytest.raises(ValueError, match=r"'cooking'.*data\.label_names"):
        TextClassificationDataModule(train_file=str(train), test_file=str(test)).setup()
    other = write_table(tmp_path / "other.csv", TOPIC_DOCS, text_key="body")
    with pytest.raises(ValueError, match=r"no column 'text'.*data\.text_key"):
        TextClassificationDataModule(train_file=str(other), test_file=str(test)).setup()


def _error(tmp_path, **files):
    """The ValueError of prepare_data (what Lightning runs before any training step) with ``files``."""
    kw = {"test_file": str(write_table(tmp_path / "test.csv", TOPIC_TEST)), **{k: str(v) for k, v in files.items()}}
    dm = TextClassificationDataModule(**kw)
    with pytest.raises(ValueError) as err:
        dm.prepare_data()
    with pytest.raises(ValueError):
        dm.setup()
    return str(err.value)


def test_empty_csv_names_the_file_and_key(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    msg = _error(tmp_path, train_file=empty)
    assert str(empty) in msg and "empty" in msg and "data.train_file" in msg
    header_only = tmp_path / "header_only.csv"
    header_only.write_text("text,label\n")
    msg = _error(tmp_path, train_file=write_table(tmp_path / "train.csv", TOPIC_DOCS), validation_file=header_only)
    assert str(header_only) in msg and "no samples" in msg and "data.validation_file" in msg


def test_single_class_csv_names_the_file_and_label_key(tmp_path):
    one_class = write_table(tmp_path / "one_class.csv", [(t, "sports") for t, _ in TOPIC_DOCS])
    msg = _error(tmp_path, train_file=one_class)
    assert str(one_class) in msg and "'sports'" in msg and f"all {len(TOPIC_DOCS)} training samples" in msg
    assert "data.label_key" in msg and "data.train_file" in msg


def test_non_utf8_csv_names_the_file_line_and_key(tmp_path):
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("text,label\nA caf\u00e9 review,food\nA match,sports\n".encode("latin-1"))
    msg = _error(tmp_path, train_file=latin1)
    # "text,label\n" is 11 bytes and "A caf" 5 more: the 0xE9 of the Latin-1 "é" is byte 16, on line 2
    assert str(latin1) in msg and "not UTF-8" in msg and "line 2, byte 16" in msg and "data.train_file" in msg
    msg = _error(tmp_path, train_file=write_table(tmp_path / "train.csv", TOPIC_DOCS), test_file=latin1)
    assert str(latin1) in msg and "data.test_file" in msg


def test_config_instantiates(compose_cfg, tmp_path, data_dir):
    train = write_table(tmp_path / "train.csv", TOPIC_DOCS)
    test = write_table(tmp_path / "test.csv", TOPIC_TEST)
    cfg = compose_cfg("data=text_classification", f"data.train_file={train}", f"data.test_file={test}",
                      "data.tokenizer=bpe", "data.bpe_vocab_size=280", tiny=False)
    dm = hydra.utils.instantiate(cfg.data)
    assert type(dm) is TextClassificationDataModule and str(dm.cache_dir).startswith(str(data_dir))
    dm.prepare_data()
    dm.setup()
    assert next(iter(dm.val_dataloader()))["input_ids"].max() < 280
