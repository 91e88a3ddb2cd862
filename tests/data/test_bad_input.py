"""Bad input in the data modules: rows with an empty label or text (an error naming the file and its lines, or
dropped and counted with data.drop_empty=true), malformed JSON lines (file, line, the JSON error in words), and the
stdlib_packages folder exclusions (an override replaces the defaults; extra_exclude_dirs adds to them).

Every file is written by hand here, so the line numbers in the expectations are counted from the text below."""

from __future__ import annotations

import logging

import hydra
import pytest
from omegaconf import OmegaConf

from longdoc.data import LRATextDataModule, StdlibPackagesDataModule, TextClassificationDataModule
from longdoc.data.stdlib_packages import DEFAULT_EXCLUDE_DIRS, list_package_files

from .fixtures import TOPIC_TEST, write_table

# 8 data rows; line 1 is the header, the quoted text of the row on line 3 spans lines 3-4, so the rows start on
# lines 2, 3, 5, 6, 7, 8, 9, 10. Bad rows: line 5 (empty label), line 7 (label of spaces), line 8 (empty text),
# line 10 (text of spaces).
CSV = (
    "text,label\n"
    "The striker scored twice.,sports\n"
    '"Parliament passed\nthe budget.",politics\n'
    "The new chip doubles battery life.,\n"
    "The goalkeeper saved a penalty.,sports\n"
    'Voters head to the polls.,"   "\n'
    ",tech\n"
    "A startup released a database.,tech\n"
    '"  ",politics\n'
)
CSV_KEPT = [("The striker scored twice.", "sports"), ("Parliament passed\nthe budget.", "politics"),
            ("The goalkeeper saved a penalty.", "sports"), ("A startup released a database.", "tech")]


def _csv(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text(CSV, encoding="utf-8")
    test = write_table(tmp_path / "test.csv", TOPIC_TEST)
    return train, test


def _value_error(dm) -> str:
    with pytest.raises(ValueError) as err:
        dm.prepare_data()
    return str(err.value)


def test_empty_labels_and_texts_in_a_csv_are_an_error_naming_the_file_and_lines(tmp_path):
    train, test = _csv(tmp_path)
    msg = _value_error(TextClassificationDataModule(train_file=str(train), test_file=str(test)))
    assert str(train) in msg and "data.train_file" in msg
    assert "2 with an empty or missing label in column 'label' (lines 5, 7)" in msg
    assert "2 with an empty or whitespace-only text in column 'text' (lines 8, 10)" in msg
    assert "data.drop_empty=true" in msg


def test_jsonl_null_and_missing_labels_name_their_lines(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text(
        '{"text": "The striker scored twice.", "label": "sports"}\n'      # line 1
        '{"text": "Parliament passed the budget.", "label": null}\n'     # line 2: null label
        "\n"                                                             # line 3: blank, skipped
        '{"text": "The new chip doubles battery life."}\n'               # line 4: no label
        '{"text": "\\t ", "label": "tech"}\n'                            # line 5: whitespace-only text
        '{"text": "Voters head to the polls.", "label": "politics"}\n',  # line 6
        encoding="utf-8")
    test = write_table(tmp_path / "test.jsonl", TOPIC_TEST)
    msg = _value_error(TextClassificationDataModule(train_file=str(train), test_file=str(test)))
    assert str(train) in msg and "(lines 2, 4)" in msg and "text' (line 5)" in msg
    # the test file is named with its own key
    bad_test = tmp_path / "bad_test.jsonl"
    bad_test.write_text('{"text": "A recipe.", "label": ""}\n', encoding="utf-8")
    good = write_table(tmp_path / "good.jsonl", [("Doc one.", "a"), ("Doc two.", "b")])
    msg = _value_error(TextClassificationDataModule(train_file=str(good), test_file=str(bad_test)))
    assert str(bad_test) in msg and "data.test_file" in msg and "label' (line 1)" in msg


def test_parquet_rows_are_named_by_row_index(tmp_path):
    train = write_table(tmp_path / "train.parquet",
                        [("Doc zero.", "a"), ("Doc one.", None), ("Doc two.", "b"), ("", "a")])
    test = write_table(tmp_path / "test.parquet", [("Doc.", "a")])
    msg = _value_error(TextClassificationDataModule(train_file=str(train), test_file=str(test)))
    assert str(train) in msg
    assert "label' (row index 1, counting from 0)" in msg and "text' (row index 3, counting from 0)" in msg


def test_hugging_face_split_rows_are_named_by_split_and_row_index(tmp_path):
    # a real `datasets.load_dataset` of a local folder of CSV files (the packaged csv builder), no hub
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "train.csv").write_text("text,label\nDoc zero.,a\nDoc one.,b\nDoc two.,\nDoc three.,a\n")
    (folder / "test.csv").write_text("text,label\nDoc four.,a\nDoc five.,b\n")
    dm = TextClassificationDataModule(hf_name=str(folder), cache_dir=str(tmp_path / "hf_cache"))
    msg = _value_error(dm)
    assert f"the Hugging Face dataset {str(folder)!r} split 'train'" in msg and "data.hf_train_split" in msg
    assert "label' (row index 2, counting from 0)" in msg
    dropped = TextClassificationDataModule(hf_name=str(folder), cache_dir=str(tmp_path / "hf_cache"), drop_empty=True,
                                           val_fraction=0.34)
    dropped.setup()
    assert dropped.label_to_id == {"a": 0, "b": 1}  # no '' class
    assert len(dropped.datasets["train"]) + len(dropped.datasets["val"]) == 3


def test_drop_empty_drops_the_rows_and_logs_the_count_per_split_and_reason(tmp_path, caplog):
    train, test = _csv(tmp_path)
    val = tmp_path / "val.csv"
    val.write_text("text,label\nThe coach praised the defence.,sports\nNo label here.,\n", encoding="utf-8")
    dm = TextClassificationDataModule(train_file=str(train), validation_file=str(val), test_file=str(test),
                                      drop_empty=True, batch_size=4, max_length=100)
    with caplog.at_level(logging.WARNING, logger="longdoc"):
        dm.setup()
    assert dm.label_to_id == {"politics": 0, "sports": 1, "tech": 2}  # '' is no class
    got = sorted((bytes(v - 2 for v in dm.datasets["train"][i]["input_ids"][1:].tolist()).decode(),
                  dm.datasets["train"][i]["label"]) for i in range(len(dm.datasets["train"])))
    assert got == sorted((t, dm.label_to_id[y]) for t, y in CSV_KEPT)
    assert len(dm.datasets["val"]) == 1 and len(dm.datasets["test"]) == len(TOPIC_TEST)
    log = caplog.text
    assert f"train: dropped 4 of 8 rows of {train}" in log
    assert "2 with an empty or missing label in column 'label' (lines 5, 7)" in log
    assert "2 with an empty or whitespace-only text in column 'text' (lines 8, 10)" in log
    assert f"val: dropped 1 of 2 rows of {val}" in log and "label' (line 3)" in log
    assert "test: dropped" not in log


def test_drop_empty_keeps_integer_labels_integers(tmp_path):
    # a blank cell in an integer column: the other labels stay the integers 0 / 1, as in a test file without blanks
    train = tmp_path / "train.csv"
    train.write_text("text,label\nGood film.,1\nBad film.,0\nNo label.,\nGreat film.,1\nDull film.,0\n")
    test = tmp_path / "test.csv"
    test.write_text("text,label\nFine film.,1\nAwful film.,0\n")
    dm = TextClassificationDataModule(train_file=str(train), test_file=str(test), drop_empty=True, val_fraction=0.25)
    dm.setup()
    assert dm.label_to_id == {0: 0, 1: 1}
    assert sorted(dm.datasets["test"].labels.tolist()) == [0, 1]


def test_drop_empty_is_a_config_key(compose_cfg, tmp_path):
    train, test = _csv(tmp_path)
    cfg = compose_cfg("data=text_classification", f"data.train_file={train}", f"data.test_file={test}", tiny=False)
    assert cfg.data.drop_empty is False
    cfg = compose_cfg("data=text_classification", f"data.train_file={train}", f"data.test_file={test}",
                      "data.drop_empty=true", tiny=False)
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    assert sorted(dm._load()["train"][1] + dm._load()["val"][1]) == sorted(y for _, y in CSV_KEPT)


# ------------------------------------------------------------------------------------------- malformed JSON
def test_malformed_json_line_names_the_file_line_and_error(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text(
        '{"text": "The striker scored twice.", "label": "sports"}\n'
        '{"text": "Parliament passed the budget.", "label": "politics"}\n'
        '{"text": "A chip.", "label": "tech"} {"text": "A second object.", "label": "tech"}\n'
        '{"text": "Voters head to the polls.", "label": "politics"}\n',
        encoding="utf-8")
    test = write_table(tmp_path / "test.jsonl", TOPIC_TEST)
    msg = _value_error(TextClassificationDataModule(train_file=str(train), test_file=str(test)))
    # '{"text": "A chip.", "label": "tech"}' is 36 characters, then a space: the second object starts at column 38
    assert str(train) in msg and "line 3, column 38" in msg and "data.train_file" in msg
    assert "more text after the end of the first JSON value" in msg and "Extra data" in msg

    missing_comma = tmp_path / "missing_comma.jsonl"
    missing_comma.write_text('{"text": "Doc.", "label": "a"}\n{"text": "Doc." "label": "b"}\n', encoding="utf-8")
    # line 2: '{"text": "Doc."' is 15 characters, then a space: '"label"' (where a comma belongs) is at column 17
    msg = _value_error(TextClassificationDataModule(train_file=str(missing_comma), test_file=str(test)))
    assert str(missing_comma) in msg and "line 2, column 17" in msg and "a comma is missing" in msg

    not_object = tmp_path / "not_object.jsonl"
    not_object.write_text('{"text": "Doc.", "label": "a"}\n\n["Doc.", "b"]\n', encoding="utf-8")
    msg = _value_error(TextClassificationDataModule(train_file=str(not_object), test_file=str(test)))
    assert str(not_object) in msg and "line 3: a JSON list where one object" in msg


def test_json_document_is_read_and_its_error_located(tmp_path):
    test = write_table(tmp_path / "test.jsonl", TOPIC_TEST)
    good = tmp_path / "train.json"
    good.write_text('[\n  {"text": "Doc one.", "label": "a"},\n  {"text": "Doc two.", "label": "b"}\n]\n')
    dm = TextClassificationDataModule(train_file=str(good), test_file=str(test), label_names=["a", "b", "sports",
                                                                                             "politics", "tech"])
    dm.prepare_data()
    assert sorted(dm._load()["train"][0] + dm._load()["val"][0]) == ["Doc one.", "Doc two."]
    bad = tmp_path / "bad.json"
    bad.write_text('[\n  {"text": "Doc one.", "label": "a"},\n  {"text": "Doc two." "label": "b"}\n]\n')
    # line 3: two spaces and '{"text": "Doc two."' (19 characters), a space: '"label"' is at column 23
    msg = _value_error(TextClassificationDataModule(train_file=str(bad), test_file=str(test)))
    assert str(bad) in msg and "line 3, column 23" in msg and "a comma is missing" in msg


def test_lra_text_tables_name_the_malformed_json_line_and_the_bad_label_line(tmp_path):
    folder = tmp_path / "imdb"
    folder.mkdir()
    (folder / "test.jsonl").write_text('{"text": "Fine.", "label": 1}\n{"text": "Awful.", "label": 0}\n')
    (folder / "train.jsonl").write_text('{"text": "Great.", "label": 1}\n{"text": "Bad.", "label": 0,}\n')
    # line 2: a trailing comma; '{"text": "Bad.", "label": 0,' is 28 characters: the '}' is at column 29
    with pytest.raises(ValueError) as err:
        LRATextDataModule(path=str(folder)).prepare_data()
    assert str(folder / "train.jsonl") in str(err.value) and "line 2, column 29" in str(err.value)
    (folder / "train.jsonl").unlink()
    (folder / "train.csv").write_text("text,label\nGreat.,pos\nBad.,\nMeh.,neg\n")
    with pytest.raises(ValueError) as err:
        LRATextDataModule(path=str(folder)).prepare_data()
    assert str(folder / "train.csv") in str(err.value) and "line 3" in str(err.value)


# ------------------------------------------------------------------------------------------- stdlib_packages
def test_exclude_dirs_override_replaces_the_default_list(compose_cfg):
    cfg = compose_cfg("data=stdlib_packages", tiny=False)
    assert list(cfg.data.exclude_dirs) == list(DEFAULT_EXCLUDE_DIRS)
    assert list(cfg.data.extra_exclude_dirs) == []
    cfg = compose_cfg("data=stdlib_packages", "data.exclude_dirs=[x]", tiny=False)
    assert OmegaConf.to_container(cfg.data.exclude_dirs) == ["x"]


def _tree(root):
    for rel in ("alpha/a0.py", "alpha/a1.py", "beta/b0.py", "test/t0.py", "alpha/test/t1.py", "site-packages/s/s0.py",
                "gamma/g0.py", "x/x0.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"pass\n")
    return root


def test_default_exclusions_skip_test_folders_and_extra_exclude_dirs_adds_to_them(tmp_path, compose_cfg):
    root = _tree(tmp_path / "src")
    listed = [f.relpath for f in list_package_files(root).files]
    assert listed == ["alpha/a0.py", "alpha/a1.py", "beta/b0.py", "gamma/g0.py", "x/x0.py"]
    cfg = compose_cfg("data=stdlib_packages", f"data.path={root}", "data.extra_exclude_dirs=[x,gamma]",
                      "data.min_files_per_class=3", tiny=False)
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    assert isinstance(dm, StdlibPackagesDataModule)
    assert dm.exclude_dirs == (*DEFAULT_EXCLUDE_DIRS, "x", "gamma")
    assert [f.relpath for f in list_package_files(root, dm.exclude_dirs).files] == ["alpha/a0.py", "alpha/a1.py",
                                                                                   "beta/b0.py"]
    with pytest.raises(ValueError, match=r"data\.extra_exclude_dirs must be a list of folder names"):
        StdlibPackagesDataModule(path=str(root), extra_exclude_dirs=["a/b"])
