"""data/README.md lists every data=<option> of src/longdoc/conf/data and the keys that point at its data; every
data option keeps its caches under ${paths.data_dir}/cache/, the folder git ignores."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "data" / "README.md"
OPTIONS = sorted(p.stem for p in (ROOT / "src" / "longdoc" / "conf" / "data").glob("*.yaml"))
#: Keys that say where a data set is (or where its caches go).
POINTER_KEYS = ("path", "train_file", "validation_file", "test_file", "hf_name", "hf_config", "source", "cache_dir")


def test_every_data_option_is_in_the_data_readme():
    assert len(OPTIONS) >= 9  # listops, listops_lra, lra_{text,retrieval,image,pathfinder}, text_classification, ...
    text = README.read_text(encoding="utf-8")
    missing = [o for o in OPTIONS if f"`data={o}`" not in text]
    assert not missing, f"data/README.md does not name {missing}"


def test_the_data_readme_names_every_key_that_points_at_data():
    text = README.read_text(encoding="utf-8")
    for option in OPTIONS:
        conf = yaml.safe_load((ROOT / "src" / "longdoc" / "conf" / "data" / f"{option}.yaml").read_text())
        for key in POINTER_KEYS:
            if key in conf:
                assert f"data.{key}" in text, f"data/README.md does not name data.{key} (data={option})"


@pytest.mark.parametrize("option", OPTIONS)
def test_caches_go_under_the_data_dir_cache(compose_cfg, data_dir, option):
    cfg = compose_cfg(f"data={option}", tiny=False)
    if "cache_dir" in cfg.data:
        # listops_lra inherits listops' folder; every other option has a folder of its own name
        assert cfg.data.cache_dir == f"{data_dir}/cache/{option.removesuffix('_lra')}"


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_git_ignores_the_cache_but_not_the_readme():
    def ignored(rel: str) -> bool:
        return subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", rel]).returncode == 0

    assert ignored("data/cache/listops/basic_train.tsv")
    assert not ignored("data/README.md")
