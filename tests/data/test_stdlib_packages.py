"""StdlibPackagesDataModule: package labels, folder exclusions, min / max files per class, stratified whole-file
splits (seeded), byte tokens with <cls>, logged truncation, the majority baseline, argument checks; then the real
standard library and a fast_dev_run through the Hydra config."""

from __future__ import annotations

import inspect
import json
import math
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from longdoc.data import DataNotFoundError, StdlibPackagesDataModule

from ..conftest import TINY_MODEL

CLS, OFF = 1, 2


def write(root: Path, rel: str, data: bytes) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


@pytest.fixture
def tree(tmp_path) -> Path:
    """A fake source tree (expected numbers worked out by hand in the tests):

    * alpha: 10 files of 100 bytes (6 in alpha/, 4 in the nested alpha/sub/deep/), plus alpha/tests/ (skipped),
      alpha/__pycache__/ (skipped) and a .txt file (not a .py);
    * beta: 5 files of 30 bytes, one of them not UTF-8 (60 bytes), plus one empty file (dropped);
    * gamma: 4 files of exactly 50 bytes;  delta: 3 files (dropped for min_files_per_class=4);
    * top-level modules top.py / other.py (no package), tests/ and idlelib/ (skipped folders).
    """
    root = tmp_path / "src"
    for i in range(6):
        write(root, f"alpha/a{i}.py", bytes([65 + i]) * 100)
    for i in range(4):
        write(root, f"alpha/sub/deep/d{i}.py", b"#" + bytes([97 + i]) * 99)
    write(root, "alpha/tests/test_a.py", b"x" * 100)
    write(root, "alpha/__pycache__/cached.py", b"x" * 100)
    write(root, "alpha/notes.txt", b"x" * 100)
    for i in range(4):
        write(root, f"beta/b{i}.py", f"b{i} = 1".encode().ljust(30, b" "))
    write(root, "beta/latin1.py", "# caf\xe9 na\xefve\n".encode("latin-1").ljust(60, b"\xff"))
    write(root, "beta/__init__.py", b"")
    for i in range(4):
        write(root, f"gamma/g{i}.py", bytes([48 + i]) * 50)
    for i in range(3):
        write(root, f"delta/x{i}.py", b"d" * 40)
    write(root, "top.py", b"t" * 100)
    write(root, "other.py", b"o" * 100)
    for i in range(30):
        write(root, f"tests/test_{i}.py", b"t" * 100)
        write(root, f"idlelib/m{i}.py", b"i" * 100)
    return root


def make(root, **kw) -> StdlibPackagesDataModule:
    args = dict(path=str(root), min_files_per_class=4, max_files_per_class=8, val_fraction=0.25, test_fraction=0.25,
                max_length=50, batch_size=4, seed=0)
    args.update(kw)
    return StdlibPackagesDataModule(**args)


def test_labels_exclusions_min_max_and_split_sizes(tree):
    dm = make(tree)
    assert (dm.task, dm.vocab_size, dm.max_seq_len) == ("classification", 258, 51)
    # delta (3 < 4 files) dropped; top-level modules, tests/, idlelib/, alpha/tests/, __pycache__ never labels
    assert dm.label_names == ["alpha", "beta", "gamma"] and dm.num_classes == 3
    files = dm.split_files
    everything = [f for s in ("train", "val", "test") for f in files[s]]
    assert len(everything) == len(set(everything)), "a file in two splits"
    assert not any(re.search(r"(^|/)(tests|idlelib|__pycache__)/|^delta/|\.txt$", f) for f in everything)
    assert "beta/__init__.py" not in everything and "top.py" not in everything
    # alpha: 10 files capped to 8 -> test round(0.25*8)=2, val 2, train 4; beta: 5 -> 1, 1, 3; gamma: 4 -> 1, 1, 2
    per = {s: {lab: sum(f.startswith(lab + "/") for f in files[s]) for lab in dm.label_names} for s in files}
    assert per == {"train": {"alpha": 4, "beta": 3, "gamma": 2}, "val": {"alpha": 2, "beta": 1, "gamma": 1},
                   "test": {"alpha": 2, "beta": 1, "gamma": 1}}
    assert {f for f in everything if f.startswith("beta/")} == {"beta/b0.py", "beta/b1.py", "beta/b2.py",
                                                                 "beta/b3.py", "beta/latin1.py"}

    uncapped = make(tree, max_files_per_class=None)
    alpha = sorted(f for s in ("train", "val", "test") for f in uncapped.split_files[s] if f.startswith("alpha/"))
    assert alpha == sorted([f"alpha/a{i}.py" for i in range(6)] + [f"alpha/sub/deep/d{i}.py" for i in range(4)])
    assert make(tree, min_files_per_class=5).label_names == ["alpha", "beta"]  # gamma (4) dropped too
    assert make(tree, min_files_per_class=3).label_names == ["alpha", "beta", "delta", "gamma"]
    assert make(tree, exclude_dirs=["idlelib"], min_files_per_class=4).label_names == ["alpha", "beta", "gamma",
                                                                                       "tests"]


def test_split_is_seeded(tree):
    a, b, c = make(tree, seed=0).split_files, make(tree, seed=0).split_files, make(tree, seed=1).split_files
    assert a == b
    assert a != c
    not_alpha = [sorted(f for f in sum(x.values(), []) if not f.startswith("alpha/")) for x in (a, c)]
    assert not_alpha[0] == not_alpha[1]  # the same beta / gamma files, split differently; alpha: a seeded 8 of 10
    assert sum(f.startswith("alpha/") for f in sum(c.values(), [])) == 8


def test_tokens_cls_truncation_log_and_majority_baseline(tree, caplog):
    caplog.set_level("INFO", logger="longdoc.data")
    dm = make(tree)
    dm.setup()
    ids_of = {lab: i for i, lab in enumerate(["alpha", "beta", "gamma"])}
    for split, paths in dm.split_files.items():
        ds = dm.datasets[split]
        assert len(ds) == len(paths)
        for i, rel in enumerate(paths):
            item = ds[i]
            raw = (tree / rel).read_bytes()[:50]
            assert item["input_ids"].tolist() == [CLS] + [b + OFF for b in raw]
            assert item["label"] == ids_of[rel.split("/")[0]]
    # cut: every kept alpha file (100 bytes) and beta/latin1.py (60); not gamma (exactly 50) nor beta's 30-byte files
    text = caplog.text
    total = 0
    for split, paths in dm.split_files.items():
        expected = sum(p.startswith("alpha/") or p == "beta/latin1.py" for p in paths)
        m = re.search(rf"stdlib packages {split}: (\d+) of (\d+) files truncated to max_length=50 bytes", text)
        assert m, text
        assert (int(m[1]), int(m[2])) == (expected, len(paths))
        total += expected
    assert total == 8 + 1
    assert re.search(r"2 top-level single-file modules \(no package\), 1 empty files", text)
    assert re.search(r"folders not searched: __pycache__ \(1\), idlelib \(1\), tests \(2\)", text)
    assert "fewer than min_files_per_class=4 files dropped: delta (3)" in text
    assert "capped at max_files_per_class=8 files (seeded random subsample, seed=0): alpha 10 -> 8" in text
    # majority (train) = alpha (4 of 9); test = 2 alpha, 1 beta, 1 gamma -> 2/4
    assert dm.majority_class_accuracy == 0.5
    assert "majority-class test accuracy = 0.5000" in text

    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].dtype == batch["labels"].dtype == torch.long
    assert batch["global_attention_mask"][:, 0].all() and not batch["global_attention_mask"][:, 1:].any()
    assert (batch["input_ids"][:, 0] == CLS).all() and batch["input_ids"].shape[1] <= 51


def test_without_cls(tree):
    dm = make(tree, add_cls=False)
    dm.setup()
    assert dm.max_seq_len == 50
    first = dm.split_files["train"][0]
    assert dm.datasets["train"][0]["input_ids"].tolist() == [b + OFF for b in (tree / first).read_bytes()[:50]]


@pytest.mark.parametrize("kwargs,match", [
    ({"min_files_per_class": 2}, r"data.min_files_per_class must be an integer >= 3"),
    ({"min_files_per_class": 4.5}, r"data.min_files_per_class must be"),
    ({"max_files_per_class": 3}, r"data.max_files_per_class must be null or an integer >= data.min_files_per_class=4"),
    ({"val_fraction": 0.0}, r"data.val_fraction must be in \(0, 1\)"),
    ({"test_fraction": 1.0}, r"data.test_fraction must be in \(0, 1\)"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, r"data.val_fraction \+ data.test_fraction must be < 1"),
    ({"max_length": 0}, r"data.max_length must be a positive integer"),
    ({"seed": -1}, r"data.seed must be a non-negative integer"),
    ({"exclude_dirs": "tests"}, r"data.exclude_dirs must be a list of folder names"),
    ({"exclude_dirs": ["a/b"]}, r"data.exclude_dirs must be a list of folder names"),
    ({"batch_size": 0}, r"batch_size must be a positive integer"),
])
def test_bad_arguments_name_the_key(tree, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(tree, **kwargs)


def test_missing_tree_and_too_few_classes(tmp_path, tree):
    with pytest.raises(DataNotFoundError, match=r"data.path=.* is not a folder"):
        make(tmp_path / "nowhere").setup()
    with pytest.raises(ValueError, match=r"has 1 package\(s\) with at least data.min_files_per_class=9"):
        make(tree, min_files_per_class=9, max_files_per_class=None).num_classes


def test_config_keys_match_constructor_arguments(compose_cfg):
    cfg = compose_cfg("data=stdlib_packages", tiny=False)
    keys = set(OmegaConf.to_container(cfg.data)) - {"_target_"}
    params = set(inspect.signature(StdlibPackagesDataModule.__init__).parameters) - {"self"}
    assert keys == params
    defaults = {k: v.default for k, v in inspect.signature(StdlibPackagesDataModule.__init__).parameters.items()}
    for key in keys:
        value = cfg.data[key]
        value = tuple(value) if OmegaConf.is_list(value) else value
        assert value == defaults[key], key


def test_real_standard_library():
    dm = StdlibPackagesDataModule(max_length=100_000, max_files_per_class=None)
    labels = dm.label_names
    assert 5 <= len(labels) <= 40, labels
    assert "email" in labels and "encodings" in labels
    assert not {"test", "tests", "idlelib", "site-packages"} & set(labels)
    dm.setup()
    lengths = torch.cat([torch.from_numpy(ds.lengths - 1) for ds in dm.datasets.values()])
    assert lengths.median().item() > 1000
    files = sum(dm.split_files.values(), [])
    assert len(files) == len(set(files)) and all(f.endswith(".py") and "/" in f for f in files)


def test_fast_dev_run_through_the_config(compose_cfg):
    from longdoc.train import train

    cfg = compose_cfg("data=stdlib_packages", "data.max_length=64", "data.max_files_per_class=20", "data.batch_size=4",
                      "attention=full", *TINY_MODEL, "callbacks.progress_bar=null", "trainer.enable_progress_bar=false",
                      "callbacks.model_summary=null", "trainer.fast_dev_run=true", "trainer.accelerator=cpu",
                      tiny=False)
    metrics = train(cfg)
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert 0.0 <= saved["test/acc"] <= 1.0 and 0.0 <= saved["majority_acc"] <= 1.0
    assert math.isfinite(saved["test/loss"]) and metrics["test/loss"] == saved["test/loss"]
