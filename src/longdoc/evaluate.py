"""Evaluation entry point (``evaluate.py``), one job per ``mode``:

* ``metrics`` (default): checkpoint -> rebuilt data module and model -> ``metrics.json`` + a table;
* ``lra_table``: training runs -> Long Range Arena Table 1 beside the published rows
  (:mod:`longdoc.evaluation.report`);
* ``efficiency``: steps/s and peak memory vs sequence length, LRA Table 2 (:mod:`longdoc.evaluation.efficiency`);
* ``attention_pattern``: which keys each query attends (:mod:`longdoc.evaluation.patterns`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from .lightning import LongDocModule

log = logging.getLogger("longdoc")


def load_module(ckpt_path: str | Path, attention_overrides: dict | None = None) -> LongDocModule:
    """Rebuild the LightningModule from a checkpoint written by ``train.py``.

    ``attention_overrides`` replaces attention hyperparameters that do not change the weights
    (e.g. ``{"n_hashes": 8}`` for LSH evaluated with more hash rounds).

    Raises:
        FileNotFoundError: no file at ``ckpt_path``.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={str(path)!r} does not exist; pass a file written by train.py, "
                                "e.g. outputs/train/runs/<run>/checkpoints/best.ckpt")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    hp = dict(ckpt["hyper_parameters"])
    if attention_overrides:
        model = dict(hp["model"])
        model["attention"] = {**model["attention"], **attention_overrides}
        hp["model"] = model
    module = LongDocModule(**hp)
    module.load_state_dict(ckpt["state_dict"])
    return module


def load_module_and_data(cfg: DictConfig) -> tuple[LongDocModule, pl.LightningDataModule]:
    """The module of ``cfg.ckpt_path`` (with the non-null ``cfg.attention`` keys overriding its attention) and
    its data module, rebuilt from the configuration saved in the checkpoint with the non-null ``cfg.data`` keys
    merged over it (not set up: no data is read yet).

    Raises:
        FileNotFoundError: missing checkpoint. ValueError: a checkpoint without a saved data config.
    """
    attn_over = {k: v for k, v in OmegaConf.to_container(cfg.attention, resolve=True).items() if v is not None}
    module = load_module(cfg.ckpt_path, attn_over or None)
    saved = OmegaConf.create(module.hparams.config or {})
    if "data" not in saved:
        raise ValueError(f"checkpoint {cfg.ckpt_path} has no saved data config; was it written by longdoc's train.py?")
    data_over = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if v is not None}
    return module, hydra.utils.instantiate(OmegaConf.merge(saved.data, data_over))


MODES = ("metrics", "lra_table", "efficiency", "attention_pattern")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg.mode`` (default ``metrics``); every mode writes into ``cfg.paths.output_dir``.

    * ``metrics``: :func:`evaluate_checkpoint` -- returns the metrics dict.
    * ``lra_table``: :func:`longdoc.evaluation.report.lra_table_mode` (``runs=[<run dir or glob>,...]``).
    * ``efficiency``: :func:`longdoc.evaluation.efficiency.efficiency_mode` (``efficiency.*``).
    * ``attention_pattern``: :func:`longdoc.evaluation.patterns.attention_pattern_mode` (``pattern.*``).

    Raises:
        ValueError: unknown ``mode`` (lists the choices); the errors of the mode's function.
    """
    mode = cfg.get("mode") or "metrics"
    if mode == "metrics":
        return evaluate_checkpoint(cfg)
    if mode == "lra_table":
        from .evaluation.report import lra_table_mode

        return lra_table_mode(cfg)
    if mode == "efficiency":
        from .evaluation.efficiency import efficiency_mode

        return efficiency_mode(cfg)
    if mode == "attention_pattern":
        from .evaluation.patterns import attention_pattern_mode

        return attention_pattern_mode(cfg)
    raise ValueError(f"mode={mode!r} is unknown: choose one of {list(MODES)} (e.g. `python evaluate.py mode=lra_table "
                     "runs=[outputs/train/runs/*]`)")


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, float]:
    """``mode=metrics``: score ``cfg.ckpt_path`` on ``cfg.split``; write ``metrics.json`` into ``cfg.paths.output_dir``.

    The data module is rebuilt from the configuration saved in the checkpoint, with ``cfg.data``
    merged over it. Returns the metrics (``{split}/acc``, ``{split}/loss``, ``majority_acc``).

    Raises:
        FileNotFoundError: missing checkpoint. ValueError: no ``ckpt_path``; ``split`` not 'test' or 'val'.
    """
    if not cfg.get("ckpt_path"):
        raise ValueError("mode=metrics needs ckpt_path=<checkpoint>, e.g. "
                         "ckpt_path=outputs/train/runs/<run>/checkpoints/best.ckpt")
    if cfg.split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {cfg.split!r}")
    module, datamodule = load_module_and_data(cfg)
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer)
    if cfg.split == "test":
        res = trainer.test(module, datamodule=datamodule, verbose=False)
    else:
        res = trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in (res[0] if res else {}).items()}
    metrics["majority_acc"] = float(getattr(datamodule, "majority_class_accuracy", float("nan")))
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps({"ckpt_path": str(cfg.ckpt_path), **metrics}, indent=2))

    table = Table(title=f"{Path(cfg.ckpt_path).name} on {cfg.split}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    attn = OmegaConf.select(OmegaConf.create(module.hparams.config or {}), "attention.name", default="?")
    table.add_row("attention", str(attn))
    for k, v in sorted(metrics.items()):
        table.add_row(k, f"{v:.4f}")
    Console().print(table)
    return metrics
