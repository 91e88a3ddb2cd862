"""Shared fixtures: compose configs with Hydra's compose API on tiny, locally generated data."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

CONF_DIR = str(Path(__file__).resolve().parents[1] / "src" / "longdoc" / "conf")

TINY_DATA = [
    "data.num_train=160", "data.num_val=40", "data.num_test=40",
    "data.min_length=10", "data.max_length=60", "data.batch_size=16",
]
TINY_MODEL = ["model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.depth=2"]


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def compose_cfg(tmp_path, data_dir):
    """compose_cfg(*overrides, config_name="train") -> DictConfig with outputs in tmp_path and tiny data."""

    def _compose(*overrides: str, config_name: str = "train", tiny: bool = True):
        GlobalHydra.instance().clear()
        base = [f"paths.output_dir={tmp_path / 'out'}", f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path}"]
        if config_name == "train" and tiny:
            base += TINY_DATA + TINY_MODEL + ["callbacks.progress_bar=null", "trainer.enable_progress_bar=false",
                                              "callbacks.model_summary=null"]
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose(config_name=config_name, overrides=base + list(overrides))

    yield _compose
    GlobalHydra.instance().clear()
