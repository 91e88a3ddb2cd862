"""``evaluate.py mode=metrics`` (the default): a checkpoint scored on its data's test or validation split."""

from __future__ import annotations

import json
from pathlib import Path

from .checkpoint import EXAMPLE_PATH, load_from_config
from .output import print_tables


def metrics_mode(cfg) -> dict[str, float]:
    """Score ``cfg.ckpt_path`` on ``cfg.split``; write ``metrics.json`` into ``cfg.paths.output_dir`` and print a table.

    The model and the data module are rebuilt from the checkpoint (:func:`longdoc.evaluation.checkpoint.
    load_from_config`: non-null ``cfg.attention`` / ``cfg.data`` keys merged over the saved ones); the trainer is
    ``cfg.trainer``. Returns the metrics (``{split}/acc``, ``{split}/loss``, ..., ``majority_acc``).

    Raises:
        ValueError: no ``ckpt_path``; ``split`` not 'test' or 'val'; an unreadable checkpoint (names the file).
        FileNotFoundError: missing checkpoint.
    """
    import hydra
    from omegaconf import OmegaConf

    if not cfg.get("ckpt_path"):
        raise ValueError(f"mode=metrics needs ckpt_path=<checkpoint>, e.g. ckpt_path={EXAMPLE_PATH}")
    if cfg.split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {cfg.split!r}")
    module, datamodule = load_from_config(cfg)
    trainer = hydra.utils.instantiate(cfg.trainer)
    if cfg.split == "test":
        res = trainer.test(module, datamodule=datamodule, verbose=False)
    else:
        res = trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in (res[0] if res else {}).items()}
    metrics["majority_acc"] = float(getattr(datamodule, "majority_class_accuracy", float("nan")))
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps({"ckpt_path": str(cfg.ckpt_path), **metrics}, indent=2))

    attn = OmegaConf.select(OmegaConf.create(module.hparams.config or {}), "attention.name", default="?")
    rows = [["attention", str(attn)], *[[k, f"{v:.4f}"] for k, v in sorted(metrics.items())]]
    print_tables([(f"{Path(cfg.ckpt_path).name} on {cfg.split}", ["metric", "value"], rows)])
    return metrics
