"""Evaluation entry point (``evaluate.py`` / ``longdoc-evaluate``): ``cfg.mode`` picks one report of
:mod:`longdoc.evaluation` from :data:`MODES`; every mode writes into ``cfg.paths.output_dir``.

Settings: ``conf/evaluate.yaml`` (the common keys, ``split`` and ``runs``) and one config group per mode with
more settings: ``conf/efficiency/default.yaml`` (``efficiency.*``), ``conf/pattern/default.yaml``
(``pattern.*``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from .evaluation.efficiency import efficiency_mode
from .evaluation.metrics import metrics_mode
from .evaluation.patterns import attention_pattern_mode
from .evaluation.report import lra_table_mode

#: mode -> the function that runs it on the composed ``evaluate.yaml`` and returns its results.
MODES: dict[str, Callable[[DictConfig], Any]] = {
    "metrics": metrics_mode,  # checkpoint -> metrics.json + a table (the default)
    "lra_table": lra_table_mode,  # training runs -> Long Range Arena Table 1 beside the published rows
    "efficiency": efficiency_mode,  # steps/s and peak memory vs sequence length (LRA Table 2)
    "attention_pattern": attention_pattern_mode,  # which keys each query attends, N x N pictures
}


def evaluate(cfg: DictConfig) -> Any:
    """Run ``cfg.mode`` (default ``metrics``) and return what its function returns.

    * ``metrics``: :func:`longdoc.evaluation.metrics.metrics_mode` -- the metrics dict (``ckpt_path=...``).
    * ``lra_table``: :func:`longdoc.evaluation.report.lra_table_mode` (``runs=[<run dir or glob>,...]``).
    * ``efficiency``: :func:`longdoc.evaluation.efficiency.efficiency_mode` (``efficiency.*``).
    * ``attention_pattern``: :func:`longdoc.evaluation.patterns.attention_pattern_mode` (``pattern.*``).

    Raises:
        ValueError: unknown ``mode`` (lists the choices); the errors of the mode's function.
    """
    mode = cfg.get("mode") or "metrics"
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is unknown: choose one of {list(MODES)} (e.g. `python evaluate.py "
                         "mode=lra_table runs=[outputs/train/runs/*]`)")
    return MODES[mode](cfg)
