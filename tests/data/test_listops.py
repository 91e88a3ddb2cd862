"""ListOps generator / evaluator / tokeniser / cache, checked against hand-written examples and an
independent, literal transcription of LRA's lra_benchmarks/data/listops.py (lra_listops_reference.py)."""

from __future__ import annotations

import csv
import logging
import random

import numpy as np
import pytest

import longdoc.data.listops as lo
from longdoc.data import (
    CLS_ID,
    NUM_CLASSES,
    PAD_ID,
    UNK_ID,
    VOCAB,
    VOCAB_SIZE,
    encode_listops,
    evaluate_source,
    generate_listops_splits,
    listops_cache_path,
    load_listops_from_path,
    load_or_generate_listops,
    max_tree_length,
    read_listops_tsv,
    sample_listops,
    to_string,
    to_value,
    tokenize_listops,
)

from .lra_listops_reference import lra_generate_tree, lra_to_string, lra_to_value


# ----------------------------------------------------------------------------------------------
# Test helpers: a parser back to LRA's trees, a token counter, a tree builder.
# ----------------------------------------------------------------------------------------------
def parse_lra(source):
    """Parse an LRA source string back into nested tuples (a tiny recursive-descent parser)."""
    toks = source.split()
    pos = 0

    def item():
        nonlocal pos
        tok = toks[pos]
        pos += 1
        if tok == "(":
            a = item()
            b = item()
            assert toks[pos] == ")"
            pos += 1
            return (a, b)
        return int(tok) if tok.isdigit() else tok

    t = item()
    assert pos == len(toks)
    return t


def count_tokens(source):
    return len([tok for tok in source.split() if tok not in ("(", ")")])


def node(op, *args):
    """Build LRA's nested tuples for an operator node (used only to build test inputs)."""
    t = (op, args[0])
    for a in args[1:]:
        t = (t, a)
    return (t, "]")


# ----------------------------------------------------------------------------------------------
# to_value / to_string
# ----------------------------------------------------------------------------------------------
def test_to_string_matches_lra_layout():
    t = (((("[MAX", 2), 9), 4), "]")
    assert to_string(t) == "( ( ( ( [MAX 2 ) 9 ) 4 ) ] )"
    assert to_string(7) == "7"


_MIN_7_3 = ((("[MIN", 7), 3), "]")
_SM_5_6 = ((("[SM", 5), 6), "]")
_MED_1234 = ((((("[MED", 1), 2), 3), 4), "]")
_MAX_9_0 = ((("[MAX", 9), 0), "]")

HAND_TREES = [
    ((((("[MAX", 2), 9), 4), "]"), 9),
    ((((("[MIN", 7), 3), 5), "]"), 3),
    (((("[MIN", 8), 6), "]"), 6),
    ((((("[MED", 1), 9), 4), "]"), 4),  # odd count: the middle value
    (((((("[MED", 4), 1), 3), 2), "]"), int(np.median([1, 2, 3, 4]))),  # even: int(2.5) = 2
    (((("[MED", 3), 8), "]"), 5),  # int(5.5) = 5
    ((((("[SM", 9), 8), 7), "]"), 4),  # 24 % 10
    (((("[SM", 0), 0), "]"), 0),
    # [MAX 2 [MIN 7 3] [SM 5 6]] = max(2, 3, 1) = 3
    ((((("[MAX", 2), _MIN_7_3), _SM_5_6), "]"), 3),
    # [SM [MED 1 2 3 4] [MAX 9 0] 5] = (2 + 9 + 5) % 10 = 6
    ((((("[SM", _MED_1234), _MAX_9_0), 5), "]"), 6),
    (7, 7),
]


@pytest.mark.parametrize("tree,expected", HAND_TREES)
def test_to_value_hand_written(tree, expected):
    assert to_value(tree) == expected
    assert lra_to_value(tree) == expected  # the reference agrees with the hand-computed answer


@pytest.mark.parametrize("tree,expected", HAND_TREES)
def test_evaluate_source_hand_written(tree, expected):
    assert evaluate_source(to_string(tree)) == expected


def test_evaluate_source_on_lra_style_strings():
    assert evaluate_source("( ( ( ( [MAX 2 ) 9 ) 4 ) ] )") == 9
    assert evaluate_source("[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]") == 5  # Nangia & Bowman's example
    assert evaluate_source("[SM 5 [SM 9 9 ] 1 ]") == 4
    with pytest.raises(ValueError):
        evaluate_source("[MAX 1 2")
    with pytest.raises(ValueError):
        evaluate_source("[FOO 1 2 ]")


def test_to_value_median_matches_numpy_exhaustively():
    rng = random.Random(3)
    for _ in range(500):
        args = [rng.randrange(10) for _ in range(rng.randint(2, 10))]
        assert to_value(node("[MED", *args)) == int(np.median(args))
        assert to_value(node("[SM", *args)) == sum(args) % 10


def test_to_value_malformed():
    with pytest.raises(ValueError):
        to_value((("[MAX", 1), 2))  # no END
    with pytest.raises(ValueError):
        to_value((("[FOO", 1), "]"))


# ----------------------------------------------------------------------------------------------
# Generator
# ----------------------------------------------------------------------------------------------
def test_generator_matches_lra_transcription():
    """Without a length bound the generator draws LRA's tree for every seed; to_string / to_value agree
    with LRA's and the length is the token count of the rendering."""
    unbounded = max_tree_length(10, 10) + 1
    for seed in range(300):
        ref_tree, ref_len = lra_generate_tree(random.Random(seed), 1, 10, 10)
        ours = lo.make_bounded_generator(random.Random(seed), 10, 10, unbounded)()
        assert ours == (lra_to_string(ref_tree), lra_to_value(ref_tree), ref_len)
        assert ref_len == count_tokens(to_string(ref_tree))
        assert (to_string(ref_tree), to_value(ref_tree)) == (lra_to_string(ref_tree), lra_to_value(ref_tree))


@pytest.mark.parametrize("max_depth,max_args,max_length", [(10, 10, 60), (10, 10, 2000), (4, 2, 10), (6, 5, 30)])
def test_bounded_generator_is_lra_with_early_rejection(max_depth, max_args, max_length):
    """Same seed -> the same tree (string, value, length) as LRA's generator when its length is
    < max_length, otherwise rejected (None)."""
    n_rejected = n_kept = 0
    for seed in range(1500):
        ref_tree, ref_len = lra_generate_tree(random.Random(seed), 1, max_depth, max_args)
        out = lo.make_bounded_generator(random.Random(seed), max_depth, max_args, max_length)()
        if ref_len < max_length:
            assert out == (lra_to_string(ref_tree), lra_to_value(ref_tree), ref_len)
            n_kept += 1
        else:
            assert out is None
            n_rejected += 1
    assert n_kept > 100
    if max_length < 100:
        assert n_rejected > 0  # both branches exercised


def test_max_tree_length():
    assert max_tree_length(1, 10) == 1
    assert max_tree_length(2, 3) == 2 + 3
    assert max_tree_length(3, 2) == 2 + 2 * (2 + 2)


SMALL = dict(min_length=20, max_length=100, max_depth=10, max_args=10)


@pytest.fixture(scope="module")
def small_splits():
    return generate_listops_splits(200, 50, 50, seed=0, **SMALL)


def test_generated_splits_lengths_labels_and_uniqueness(small_splits):
    assert [len(small_splits[s]) for s in ("train", "val", "test")] == [200, 50, 50]
    sources = [src for rows in small_splits.values() for src, _ in rows]
    assert len(set(sources)) == len(sources) == 300  # no duplicates, within or across splits
    for rows in small_splits.values():
        for src, label in rows:
            n = count_tokens(src)
            assert 20 < n < 100
            assert n == len(tokenize_listops(src))
            assert isinstance(label, int) and label == lra_to_value(parse_lra(src))


def test_generation_deterministic_per_seed(small_splits):
    again = generate_listops_splits(200, 50, 50, seed=0, **SMALL)
    other = generate_listops_splits(200, 50, 50, seed=1, **SMALL)
    assert again == small_splits
    assert other["train"] != small_splits["train"]


def test_generation_argument_errors():
    with pytest.raises(ValueError, match="min_length"):
        generate_listops_splits(10, 1, 1, min_length=100, max_length=100)
    with pytest.raises(ValueError, match="min_length"):
        generate_listops_splits(10, 1, 1, min_length=50, max_length=60, max_depth=2, max_args=3)
    with pytest.raises(ValueError, match="num_val"):
        generate_listops_splits(10, -1, 1, min_length=10, max_length=60)


def test_generation_stalls_cleanly_on_tiny_window():
    # 0 < length < 2 admits only the 10 single-value trees: 20 distinct samples cannot exist.
    with pytest.raises(RuntimeError, match="stalled"):
        sample_listops(20, min_length=0, max_length=2, seed=0, max_stall_attempts=2000)


def test_sample_listops_triples():
    samples = sample_listops(30, min_length=5, max_length=40, seed=4)
    assert len({s for s, _, _ in samples}) == 30
    for source, label, length in samples:
        assert 5 < length < 40 and length == count_tokens(source)
        assert label == lra_to_value(parse_lra(source))


# ----------------------------------------------------------------------------------------------
# Tokenisation / vocabulary
# ----------------------------------------------------------------------------------------------
def test_vocabulary_layout():
    assert VOCAB[:3] == ("<pad>", "<cls>", "<unk>")
    assert (PAD_ID, CLS_ID, UNK_ID) == (0, 1, 2)
    assert VOCAB[3:] == ("[MAX", "[MIN", "[MED", "[SM", "X", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
    assert VOCAB_SIZE == 18 and NUM_CLASSES == 10


def test_tokenize_hand_written_lra_line():
    line = "( ( ( ( [MAX 2 ) 9 ) ( ( ( [SM 1 ) 0 ) ] ) ) ] )"
    assert tokenize_listops(line) == ["[MAX", "2", "9", "[SM", "1", "0", "X", "X"]
    ids = {"[MAX": 3, "[MIN": 4, "[MED": 5, "[SM": 6, "X": 7, **{str(d): 8 + d for d in range(10)}}
    expected = [ids[t] for t in ["[MAX", "2", "9", "[SM", "1", "0", "X", "X"]]
    assert encode_listops(line, add_cls=False) == expected
    assert encode_listops(line) == [1] + expected
    assert encode_listops("[FIRST 1 ]", add_cls=False) == [UNK_ID, 9, 7]


# ----------------------------------------------------------------------------------------------
# TSV I/O and caching
# ----------------------------------------------------------------------------------------------
HAND_TSV = "Source\tTarget\r\n( ( ( [MAX 2 ) 9 ) ] )\t9\r\n( ( ( [SM 5 ) 7 ) ] )\t2\r\n"


def test_read_hand_written_lra_tsv(tmp_path):
    p = tmp_path / "basic_train.tsv"
    p.write_bytes(HAND_TSV.encode())
    assert read_listops_tsv(p) == [("( ( ( [MAX 2 ) 9 ) ] )", 9), ("( ( ( [SM 5 ) 7 ) ] )", 2)]


def test_read_tsv_rejects_bad_files(tmp_path):
    bad_header = tmp_path / "a.tsv"
    bad_header.write_text("Input\tLabel\n[MAX 1 2 ]\t2\n")
    with pytest.raises(ValueError, match="Source"):
        read_listops_tsv(bad_header)
    bad_label = tmp_path / "b.tsv"
    bad_label.write_text("Source\tTarget\n[MAX 1 2 ]\tx\n")
    with pytest.raises(ValueError, match="label"):
        read_listops_tsv(bad_label)
    with pytest.raises(FileNotFoundError):
        read_listops_tsv(tmp_path / "missing.tsv")


def test_load_from_path_missing_file_message(tmp_path):
    (tmp_path / "basic_train.tsv").write_text(HAND_TSV)
    with pytest.raises(FileNotFoundError) as err:
        load_listops_from_path(tmp_path)
    msg = str(err.value)
    assert "basic_val.tsv" in msg and "lra_release.gz" in msg and "lra_release/listops-1000" in msg
    assert "data.path" in msg


def test_load_from_path_reads_all_splits(tmp_path):
    for split in ("train", "val", "test"):
        (tmp_path / f"basic_{split}.tsv").write_text(HAND_TSV)
    splits = load_listops_from_path(tmp_path)
    assert {k: len(v) for k, v in splits.items()} == {"train": 2, "val": 2, "test": 2}


CACHE_KW = dict(num_train=40, num_val=10, num_test=10, min_length=10, max_length=60, seed=0)


def test_cache_writes_lra_format_and_reuses_files(tmp_path, monkeypatch):
    first = load_or_generate_listops(tmp_path, **CACHE_KW)
    folder = listops_cache_path(tmp_path, **CACHE_KW)
    assert folder.parent == tmp_path
    files = {s: folder / f"basic_{s}.tsv" for s in ("train", "val", "test")}
    for split, p in files.items():
        with open(p, newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        assert rows[0] == ["Source", "Target"]
        assert [(r[0], int(r[1])) for r in rows[1:]] == first[split]
    assert not list(folder.glob(".*tmp"))  # no leftover temporary files
    mtimes = {s: p.stat().st_mtime_ns for s, p in files.items()}

    def boom(*a, **k):
        raise AssertionError("cache was not reused")

    monkeypatch.setattr(lo, "generate_listops_splits", boom)
    second = load_or_generate_listops(tmp_path, **CACHE_KW)
    assert second == first
    assert {s: p.stat().st_mtime_ns for s, p in files.items()} == mtimes
    # another parameter -> another folder -> generation is needed
    with pytest.raises(AssertionError, match="not reused"):
        load_or_generate_listops(tmp_path, **{**CACHE_KW, "seed": 1})


def test_cache_regenerates_when_a_file_is_missing(tmp_path):
    first = load_or_generate_listops(tmp_path, **CACHE_KW)
    folder = listops_cache_path(tmp_path, **CACHE_KW)
    (folder / "basic_val.tsv").unlink()
    again = load_or_generate_listops(tmp_path, **CACHE_KW)
    assert again == first and (folder / "basic_val.tsv").is_file()


@pytest.mark.parametrize("row,cut", [(6, "mid-source"), (40, "mid-source"), (40, "after the tab"),
                                     (40, "before the line break")])
def test_cache_file_cut_mid_line_is_regenerated_with_a_warning(tmp_path, caplog, row, cut):
    load_or_generate_listops(tmp_path, **CACHE_KW)
    path = listops_cache_path(tmp_path, **CACHE_KW) / "basic_train.tsv"
    original = path.read_bytes()
    lines = original.split(b"\r\n")  # csv.writer ends every line with \r\n: header, 40 rows, ""
    assert len(lines) == 1 + 40 + 1 and lines[-1] == b""
    start = sum(len(line) + 2 for line in lines[:row])  # first byte of sample `row` (1-based)
    source, label = lines[row].split(b"\t")
    offset = start + {"mid-source": len(source) // 2, "after the tab": len(source) + 1,
                      "before the line break": len(lines[row])}[cut]
    path.write_bytes(original[:offset])
    caplog.set_level(logging.WARNING, logger="longdoc.data")

    splits = load_or_generate_listops(tmp_path, **CACHE_KW)

    assert path.read_bytes() == original  # regenerated byte for byte (same seed)
    expected = [(src.decode(), int(y)) for src, y in (line.split(b"\t") for line in lines[1:-1])]
    assert splits["train"] == expected and len(expected) == 40
    assert all(y == lra_to_value(parse_lra(src)) for src, y in splits["train"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(path) in m and "regenerating" in m for m in warnings), warnings


def test_cache_folder_name_encodes_parameters(tmp_path):
    names = {
        listops_cache_path(tmp_path, **{**CACHE_KW, key: value}).name
        for key, value in [("num_train", 41), ("num_val", 11), ("num_test", 11), ("min_length", 11),
                           ("max_length", 61), ("seed", 3)]
    }
    names.add(listops_cache_path(tmp_path, **CACHE_KW, max_depth=9).name)
    names.add(listops_cache_path(tmp_path, **CACHE_KW, max_args=9).name)
    names.add(listops_cache_path(tmp_path, **CACHE_KW).name)
    assert len(names) == 9


def test_generation_logs_timing(tmp_path, caplog):
    caplog.set_level("INFO", logger="longdoc.data")
    load_or_generate_listops(tmp_path, **CACHE_KW)
    load_or_generate_listops(tmp_path, **CACHE_KW)
    text = caplog.text
    assert "generated" in text and "loaded cached" in text and " s" in text
