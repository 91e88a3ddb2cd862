"""Training entry point: config -> objects -> fit -> test best checkpoint -> metrics.json.

Shaped after ashleve/lightning-hydra-template: everything is instantiated from the composed config,
``seed_everything`` first, then fit, then test on the best checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from .config import ConfigError, resolve_wandb_offline, validate_config
from .runtime import tune_cpu_allocator

log = logging.getLogger("longdoc")


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a mapping of named configs (callbacks / loggers)."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(c) for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """``None`` -> None; ``"last"`` -> the newest ``last*.ckpt`` under ``<output_dir>/checkpoints``; a path -> itself.

    Raises:
        ConfigError: ``last`` with no such file, or a path that does not exist (with how to fix it).
    """
    if ckpt_path is None:
        return None
    if str(ckpt_path) == "last":
        ckpt_dir = Path(output_dir) / "checkpoints"
        found = sorted(ckpt_dir.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(f"ckpt_path=last but there is no last*.ckpt in {ckpt_dir}; to resume an earlier run, "
                              "reuse its directory: `python train.py hydra.run.dir=<that run's dir> ckpt_path=last`, "
                              "or pass the checkpoint file: ckpt_path=<path>/last.ckpt")
        return str(found[-1])
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path!r} does not exist; give a checkpoint file or `last`")
    return str(ckpt_path)


def _run_name_and_group(cfg: DictConfig) -> tuple[str, str | None]:
    """wandb run name (attention + the command-line overrides) and group (the sweep, for multirun)."""
    name, group = f"{cfg.get('task_name', 'train')}-{cfg.attention.name}", None
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        overrides = hc.job.override_dirname
        if overrides:
            name = f"{name}-{overrides}"
        if hc.mode == RunMode.MULTIRUN:
            group = Path(hc.sweep.dir).name
    except ValueError:  # not launched through @hydra.main (compose API in tests)
        pass
    return name[:128], group


def _finish_loggers(loggers: list[Any]) -> None:
    """Close wandb runs so their offline files are complete (Lightning leaves them open)."""
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger" and getattr(lg, "_experiment", None) is not None:
            lg.experiment.finish()


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, torch.Tensor))}


def train(cfg: DictConfig) -> dict[str, float]:
    """Run one training job from a composed config; return the final metrics.

    Writes ``config.yaml`` (resolved) and ``metrics.json`` into ``cfg.paths.output_dir``; checkpoints go to
    ``<output_dir>/checkpoints`` (``best.ckpt`` and ``last.ckpt``). ``metrics.json`` holds the logged metrics
    (``test/acc`` for the classifiers, ``test/bpb`` for language modelling, ...), ``wall_time_s`` and the
    data's baseline: ``majority_acc`` (classification, retrieval) or ``unigram_bpb`` (lm).

    Raises:
        longdoc.config.ConfigError: an invalid configuration, before any data work or training.
    """
    t0 = time.perf_counter()
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, module = validate_config(cfg)
    if OmegaConf.select(cfg, "runtime.cpu_allocator", default="default") == "tuned":
        tune_cpu_allocator()
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), out_dir)
    if cfg.get("logger"):
        resolve_wandb_offline(cfg.logger)
        wb = cfg.logger.get("wandb")
        if wb is not None:
            name, group = _run_name_and_group(cfg)
            with open_dict(wb):
                wb.name = wb.get("name") or name
                wb.group = wb.get("group") or group
    loggers = instantiate_group(cfg.get("logger"))
    if ckpt_path is not None:
        step = int(torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)["global_step"])
        for lg in loggers:
            if hasattr(lg, "truncate_after"):
                dropped = lg.truncate_after(step)
                log.info("resuming from %s at global step %d (%d logged rows after it dropped)", ckpt_path, step, dropped)
    callbacks = instantiate_group(cfg.get("callbacks"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = _scalars(trainer.callback_metrics)
    if cfg.get("test"):
        ckpt = None
        if trainer.checkpoint_callback is not None and getattr(trainer.checkpoint_callback, "best_model_path", ""):
            ckpt = "best"
        else:
            log.warning("no best checkpoint (fast_dev_run or checkpointing off): testing the current weights")
        test_metrics = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt)
        metrics.update(_scalars(test_metrics[0] if test_metrics else {}))
    _finish_loggers(loggers)
    metrics["wall_time_s"] = time.perf_counter() - t0
    if getattr(datamodule, "task", "classification") == "lm":
        metrics["unigram_bpb"] = float(getattr(datamodule, "unigram_bits_per_byte", float("nan")))
        keys = ("test/bpb", "unigram_bpb", "val/bpb")
    else:
        metrics["majority_acc"] = float(getattr(datamodule, "majority_class_accuracy", float("nan")))
        keys = ("test/acc", "majority_acc", "val/acc")
    if trainer.is_global_zero:
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        summary = ", ".join(f"{k}={metrics[k]:.4f}" for k in keys if k in metrics)
        log.info("done in %.1f s: %s; outputs in %s", metrics["wall_time_s"], summary, out_dir)
    return metrics
