"""Command-line entry points: ``longdoc-train`` / ``longdoc-evaluate`` (console scripts) and the repository's
``train.py`` / ``evaluate.py``, all composing the configuration shipped in the package (``pkg://longdoc.conf``),
so they work from any directory after a non-editable ``pip install``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from .resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="pkg://longdoc.conf", config_name="train")
def train_main(cfg: DictConfig) -> float | None:
    """``longdoc-train [group=option ...] [key=value ...]``: train, test the best checkpoint, and return the best
    validation value of ``optimized_metric`` to a sweeper (never a test metric)."""
    from .train import optimized_value, train

    return optimized_value(cfg, train(cfg))


@hydra.main(version_base="1.3", config_path="pkg://longdoc.conf", config_name="evaluate")
def evaluate_main(cfg: DictConfig) -> None:
    """``longdoc-evaluate mode=<metrics|lra_table|efficiency|attention_pattern> ...``."""
    from .evaluate import evaluate

    evaluate(cfg)
