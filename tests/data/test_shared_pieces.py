"""The pieces every data module shares: one tokenisation of documents (bytes, a trained BPE, a checkpoint's
tokenizer), records and their splits, the read-once source, the pixel data modules and the collator of each task.
Expected ids are written out by hand from the UTF-8 bytes / the word vocabularies below."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longdoc.data import (
    TASK_DOCUMENTS,
    DocumentTokenizer,
    LRARetrievalDataModule,
    PixelDataModule,
    SourceDataModule,
    byte_values_dataset,
    carve_validation_records,
    select_records,
)
from longdoc.data.pretrained_tokenizer import PretrainedTokenizer

from .fixtures import save_word_tokenizer, write_aan


def ids(dataset):
    return [list(dataset[i]["input_ids"]) for i in range(len(dataset))]


def test_byte_tokenisation_by_hand():
    tok = DocumentTokenizer(max_length=2, add_cls=True)
    # "é!" is C3 A9 21 in UTF-8; a str is encoded, bytes are taken as they are
    ds, cut = tok.dataset([b"abc", "\u00e9!", b"z"], [1, 0, 1])
    assert ids(ds) == [[1, 0x61 + 2, 0x62 + 2], [1, 0xC3 + 2, 0xA9 + 2], [1, 0x7A + 2]]
    assert cut == 2 and list(ds.labels) == [1, 0, 1] and list(ds.lengths) == [3, 3, 2]
    assert (tok.unit, tok.read_limit, ds.flat.dtype) == ("bytes", 3, np.uint8)  # one byte per stored value
    assert tok.truncation(cut, 3, "reviews") == "2 of 3 reviews truncated to max_length=2 bytes"
    no_cls, _ = DocumentTokenizer(max_length=5, add_cls=False).dataset([b"ab"], [0])
    assert ids(no_cls) == [[0x61 + 2, 0x62 + 2]]


def test_an_empty_document_without_cls_is_refused():
    with pytest.raises(ValueError, match=r"sample 1 is empty .*add_cls=true"):
        DocumentTokenizer(max_length=5, add_cls=False).dataset([b"a", b""], [0, 1])


def test_bpe_tokenisation_prepends_cls_to_the_first_max_length_ids():
    from tokenizers import Tokenizer, models, pre_tokenizers

    bpe = Tokenizer(models.WordLevel({"<pad>": 0, "<cls>": 1, "a": 2, "b": 3}, unk_token="<pad>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = DocumentTokenizer(max_length=2, add_cls=True, bpe=bpe)
    ds, cut = tok.dataset(["a b a", "b"], [0, 1])
    assert ids(ds) == [[1, 2, 3], [1, 3]] and cut == 1
    assert (tok.unit, tok.read_limit) == ("BPE tokens", None)
    assert ds[0]["input_ids"].dtype == np.int64


def test_a_checkpoint_tokenizer_wraps_the_cut_text_in_its_template(tmp_path):
    pretrained = PretrainedTokenizer(save_word_tokenizer(tmp_path / "tokenizer.json"))  # [CLS]=2 [SEP]=3, w<i> = i
    tok = DocumentTokenizer(max_length=2, add_cls=True, pretrained=pretrained, bpe=object())  # the checkpoint wins
    ds, cut = tok.dataset([b"w4 w5 w6", "w7"], [0, 1])
    assert ids(ds) == [[2, 4, 5, 3], [2, 7, 3]] and cut == 1
    assert (tok.unit, tok.read_limit) == ("tokens", None)
    plain, _ = DocumentTokenizer(max_length=2, add_cls=False, pretrained=pretrained).dataset(["w9 w8"], [0])
    assert ids(plain) == [[9, 8]]


def test_records_are_selected_and_carved_with_their_labels():
    docs, labels = ["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9"], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert select_records((docs, labels), [3, 0]) == (["d3", "d0"], [3, 0])
    train, val = carve_validation_records((docs, labels), 0.3, seed=5)
    assert len(val[0]) == 3 and len(train[0]) == 7
    assert sorted(train[0] + val[0]) == docs  # disjoint, nothing lost
    for part_docs, part_labels in (train, val):
        assert part_docs == sorted(part_docs)  # file order kept
        assert part_docs == [f"d{y}" for y in part_labels]  # every label stays with its document
    assert carve_validation_records((docs, labels), 0.3, seed=5) == (train, val)
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        carve_validation_records((docs, labels), 1.0, seed=0)


class CountingSource(SourceDataModule):
    """Six documents of two labels, counting how often the source is read."""

    display_name = "counting"

    def __init__(self):
        super().__init__(batch_size=2)
        self.reads = 0

    vocab_size = 258
    num_classes = 2

    def _max_seq_len_bound(self) -> int:
        return 4

    def _read_source(self):
        self.reads += 1
        return ([b"a", b"bb", b"ccc", b"d", b"ee", b"f"], [0, 1, 1, 0, 1, 0])

    def _build_datasets(self):
        docs, labels = self._load()
        self._raw = None
        return {split: byte_values_dataset(*select_records((docs, labels), idx), add_cls=self.add_cls)
                for split, idx in (("train", [0, 1, 2, 3]), ("val", [4]), ("test", [5]))}


def test_a_source_is_read_once_for_prepare_data_and_setup():
    dm = CountingSource()
    dm.prepare_data()
    dm.setup()
    assert dm.reads == 1 and dm._raw is None  # the datasets hold the tokens now
    assert ids(dm.datasets["train"]) == [[1, 99], [1, 100, 100], [1, 101, 101, 101], [1, 102]]
    assert dm.max_seq_len == 4 and dm.majority_class_accuracy == 1.0  # train: 0, 1, 1, 0 -> 0; test label 0


class Squares(PixelDataModule):
    """Three 2x2 images."""

    num_pixels = 4
    num_classes = 2

    def _build_datasets(self):
        pixels = np.array([[0, 1, 2, 255], [9, 9, 9, 9], [7, 0, 0, 7]], dtype=np.uint8)
        return {"train": self.pixel_dataset(pixels, [0, 1], row_index=[0, 2]),
                "val": self.pixel_dataset(pixels, [1], row_index=[1]),
                "test": self.pixel_dataset(pixels[1:], [1, 0])}


@pytest.mark.parametrize("add_cls", [True, False])
def test_pixel_data_modules_share_vocabulary_bound_and_tokens(add_cls):
    dm = Squares(batch_size=2, add_cls=add_cls)
    assert (dm.vocab_size, dm.max_seq_len) == (258, 4 + add_cls)
    dm.setup()
    cls = [1] if add_cls else []
    assert ids(dm.datasets["train"]) == [cls + [2, 3, 4, 257], cls + [9, 2, 2, 9]]
    assert ids(dm.datasets["test"]) == [cls + [11, 11, 11, 11], cls + [9, 2, 2, 9]]
    batch = next(iter(dm.val_dataloader()))
    assert batch["input_ids"].tolist() == [cls + [11, 11, 11, 11]]
    assert batch["global_attention_mask"].tolist() == [[True] + [False] * 4 if add_cls else [False] * 4]


def test_one_collator_per_task(tmp_path):
    assert TASK_DOCUMENTS == {"classification": ("",), "retrieval": ("", "_2"), "lm": ("",)}
    write_aan(tmp_path)
    dm = LRARetrievalDataModule(path=tmp_path, max_length=3, batch_size=2)
    batch = dm._collator()([{"input_ids": np.array([1, 5, 6]), "input_ids_2": np.array([1, 7]), "label": 1},
                            {"input_ids": np.array([1]), "input_ids_2": np.array([1, 8, 9]), "label": 0}])
    assert batch["input_ids"].tolist() == [[1, 5, 6], [1, 0, 0]]
    assert batch["input_ids_2"].tolist() == [[1, 7, 0], [1, 8, 9]]
    assert batch["padding_mask_2"].tolist() == [[True, True, False], [True, True, True]]
    assert batch["global_attention_mask_2"][:, 0].all() and batch["labels"].tolist() == [1, 0]
    assert batch["labels"].dtype == torch.long
