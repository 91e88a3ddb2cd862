"""data.tokenizer_file: a checkpoint's own tokenizer.json in the text data modules, against HF tokenizers' own
encoding of the same texts (truncation to max_length text tokens + the template's special tokens)."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer

from longdoc.data import DataNotFoundError, LRARetrievalDataModule, LRATextDataModule, StdlibPackagesDataModule
from longdoc.data import TextClassificationDataModule
from longdoc.data.pretrained_tokenizer import PretrainedTokenizer

from .fixtures import WORDS, save_word_tokenizer

TEXTS = ["w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15", "w20 unknownword w21", ""]


def reference(file, texts, max_length):
    """HF tokenizers itself: its template, truncated to max_length + 2 (the two special tokens), no padding."""
    tok = Tokenizer.from_file(str(file))
    tok.no_padding()
    tok.enable_truncation(max_length + 2)
    return [e.ids for e in tok.encode_batch(texts)]


@pytest.fixture
def tok_file(tmp_path):
    return save_word_tokenizer(tmp_path / "tokenizer.json")


def test_encoding_truncation_and_padding_id(tok_file):
    tok = PretrainedTokenizer(tok_file.parent)  # a directory holding tokenizer.json
    assert (tok.pad_id, tok.num_special_tokens, tok.vocab_size) == (0, 2, 60)
    ids, cut = tok.encode(TEXTS, max_length=10)
    assert [list(x) for x in ids] == reference(tok_file, TEXTS, 10)  # the file's own truncation (8) is off
    assert [len(x) for x in ids] == [12, 5, 2] and cut == 1
    ids, _ = tok.encode(TEXTS, max_length=10, add_special_tokens=False)
    assert list(ids[1]) == [20, 1, 21]


def test_missing_file_and_missing_padding_token_are_named(tmp_path, tok_file):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "vocab.txt").write_text("[PAD]\n")
    with pytest.raises(DataNotFoundError, match=r"data.tokenizer_file=.*no tokenizer.json there \(found: vocab.txt\)"):
        PretrainedTokenizer(tmp_path / "other")
    spec = json.loads(tok_file.read_text())
    spec["padding"] = None
    spec["model"]["vocab"] = {k.replace("[PAD]", "[NOPE]"): v for k, v in spec["model"]["vocab"].items()}
    spec["added_tokens"] = []
    (tmp_path / "nopad.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="has no padding token"):
        PretrainedTokenizer(tmp_path / "nopad.json")


def test_stdlib_packages_with_a_pretrained_tokenizer(tmp_path, tok_file):
    root = tmp_path / "src"
    texts = {}
    for pkg, words in (("alpha", WORDS[:20]), ("beta", WORDS[20:40])):
        for i in range(5):
            text = " ".join(words[(i + k) % 20] for k in range(3 + 4 * i)) + "\n"
            (root / pkg).mkdir(parents=True, exist_ok=True)
            (root / pkg / f"m{i}.py").write_text(text)
            texts[f"{pkg}/m{i}.py"] = text
    dm = StdlibPackagesDataModule(path=str(root), min_files_per_class=3, max_length=9, tokenizer_file=str(tok_file),
                                  batch_size=4)
    assert dm.max_seq_len == 11 and dm.pad_id == 0 and dm.vocab_size == 60  # 9 tokens + [CLS] [SEP]
    dm.setup()
    for split, files in dm.split_files.items():
        expected = reference(tok_file, [texts[f] for f in files], 9)
        assert [list(dm.datasets[split][i]["input_ids"]) for i in range(len(files))] == expected
    batch = next(iter(dm.train_dataloader()))
    assert batch["global_attention_mask"][:, 0].all() and (batch["input_ids"][:, 0] == 2).all()
    assert (batch["input_ids"][~batch["padding_mask"]] == 0).all()


def test_lra_text_and_retrieval_and_text_classification_use_the_file(tmp_path, tok_file):
    data = tmp_path / "imdb"
    data.mkdir()
    rows = "text,label\n" + "".join(f"{' '.join(WORDS[i:i + 6 + i])},{i % 2}\n" for i in range(10))
    (data / "train.csv").write_text(rows)
    (data / "test.csv").write_text(rows)
    dm = LRATextDataModule(path=str(data), max_length=7, tokenizer_file=str(tok_file), val_fraction=0.2)
    dm.setup()
    assert dm.max_seq_len <= 9 and dm.vocab_size == 60
    test_texts = [" ".join(WORDS[i:i + 6 + i]) for i in range(10)]
    assert [list(dm.datasets["test"][i]["input_ids"]) for i in range(10)] == reference(tok_file, test_texts, 7)

    tsv = tmp_path / "aan"
    tsv.mkdir()
    for suffix in ("train", "eval", "test"):
        (tsv / f"new_aan_pairs.{suffix}.tsv").write_text(
            "".join(f"{i % 2}\ta{i}\tb{i}\t{' '.join(WORDS[:i + 1])}\t{' '.join(WORDS[i:i + 3])}\n" for i in range(6)))
    dm = LRARetrievalDataModule(path=str(tsv), max_length=4, tokenizer_file=str(tok_file))
    dm.setup()
    item = dm.datasets["test"][5]
    assert list(item["input_ids"]) == reference(tok_file, [" ".join(WORDS[:6])], 4)[0]
    assert list(item["input_ids_2"]) == reference(tok_file, [" ".join(WORDS[5:8])], 4)[0]

    tc = TextClassificationDataModule(train_file=str(data / "train.csv"), test_file=str(data / "test.csv"),
                                      max_length=5, tokenizer_file=str(tok_file))
    tc.setup()
    assert [list(tc.datasets["test"][i]["input_ids"]) for i in range(10)] == reference(tok_file, test_texts, 5)
    with pytest.raises(ValueError, match="data.tokenizer=bpe trains a new vocabulary"):
        TextClassificationDataModule(train_file="x.csv", test_file="y.csv", tokenizer="bpe", tokenizer_file=str(tok_file))
