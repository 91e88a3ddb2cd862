"""Helpers shared by the report modes: the training configuration, models from it, checkpoints, run dirs."""

from __future__ import annotations

import glob
import inspect
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("longdoc")

# the configuration shipped in the package (longdoc/conf); LONGDOC_CONF_DIR overrides it.
CONF_DIR = Path(os.environ.get("LONGDOC_CONF_DIR", Path(__file__).resolve().parents[1] / "conf"))


def compose_train_config(overrides: Sequence[str] = ()) -> Any:
    """The training configuration ``conf/train.yaml`` composed with Hydra ``overrides`` (unresolved DictConfig).

    Works inside a running ``@hydra.main`` application (whose global Hydra state is left as it was) and
    outside one (tests, scripts).

    Raises:
        FileNotFoundError: ``conf/`` not found (set ``LONGDOC_CONF_DIR``).
        hydra.errors.ConfigCompositionException / OverrideParseException: a bad override (Hydra's message
            names it).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    if not (CONF_DIR / "train.yaml").is_file():
        raise FileNotFoundError(f"no train.yaml in {CONF_DIR}: the longdoc installation is incomplete "
                                "(reinstall it) or LONGDOC_CONF_DIR points elsewhere")
    backup = get_gh_backup()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides))
    finally:
        restore_gh_from_backup(backup)


def train_model_config(attention: str, overrides: Sequence[str] = ()) -> dict:
    """``model`` section (resolved, plain dict) of the training config with ``attention=<attention>``.

    ``overrides`` are further train-config overrides, e.g. ``["model.depth=4", "attention.bucket_size=64"]``.

    Raises:
        ValueError: unknown attention name (lists the choices). Hydra errors for bad overrides.
    """
    from omegaconf import OmegaConf

    from ..attention import ATTENTION_REGISTRY

    if attention not in ATTENTION_REGISTRY:
        raise ValueError(f"unknown attention {attention!r}: choose from {sorted(ATTENTION_REGISTRY)}")
    cfg = compose_train_config([f"attention={attention}", *overrides])
    return OmegaConf.to_container(cfg.model, resolve=True)


def load_checkpoint_hparams(ckpt_path: str | os.PathLike) -> dict:
    """``hyper_parameters`` of a Lightning checkpoint written by ``train.py`` (model, vocab_size, num_classes,
    max_seq_len, config, ...), loaded on the CPU.

    Raises:
        FileNotFoundError: no file at ``ckpt_path``. KeyError: not a Lightning checkpoint.
    """
    import torch

    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={str(path)!r} does not exist; pass a file written by train.py, "
                                "e.g. outputs/train/runs/<run>/checkpoints/best.ckpt")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if "hyper_parameters" not in ckpt:
        raise KeyError(f"{path} has no 'hyper_parameters': not a checkpoint written by longdoc's train.py")
    return dict(ckpt["hyper_parameters"])


def encoder_kwargs(model_cfg: Mapping, *, vocab_size: int, max_seq_len: int) -> dict:
    """Keyword arguments of :class:`longdoc.models.Encoder` from a ``model`` config section.

    Keys the encoder does not take (``pooling``, head settings) are dropped; an axial ``position.axial_shape``
    too small for ``max_seq_len`` is reset to ``None`` (automatic).
    """
    from ..models import Encoder

    accepted = set(inspect.signature(Encoder.__init__).parameters) - {"self"}
    kw = {k: v for k, v in dict(model_cfg).items() if k in accepted}
    position = dict(kw.get("position") or {"name": "none"})
    shape = position.get("axial_shape")
    if shape is not None and _prod(shape) < max_seq_len:
        position["axial_shape"] = None
    kw["position"] = position
    kw.update(vocab_size=vocab_size, max_seq_len=max_seq_len)
    return kw


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def find_encoder(module: Any):
    """The first :class:`longdoc.models.Encoder` inside ``module`` (a LightningModule or any nn.Module).

    Raises:
        ValueError: ``module`` contains no Encoder.
    """
    from ..models import Encoder

    for m in module.modules():
        if isinstance(m, Encoder):
            return m
    raise ValueError(f"{type(module).__name__} contains no longdoc.models.Encoder")


def expand_run_dirs(patterns: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Run directories named by ``patterns`` (paths or glob patterns, relative to the working directory).

    A directory without ``config.yaml`` whose sub-directories have one (a Hydra multirun folder) stands for
    those sub-directories. Returns ``(dirs, warnings)``: sorted, de-duplicated directories and one message
    per pattern that matched nothing.
    """
    dirs: list[Path] = []
    warnings: list[str] = []
    for pat in patterns:
        pat = str(pat)
        matches = sorted(glob.glob(os.path.expanduser(pat))) if glob.has_magic(pat) else [os.path.expanduser(pat)]
        matches = [m for m in matches if Path(m).is_dir()]
        if not matches:
            warnings.append(f"runs entry {pat!r} matches no directory")
            continue
        for m in matches:
            p = Path(m)
            if not (p / "config.yaml").is_file():
                subs = sorted(c.parent for c in p.glob("*/config.yaml")) or sorted(c.parent for c in p.glob("*/*/config.yaml"))
                if subs:
                    dirs.extend(subs)
                    continue
            dirs.append(p)
    seen: set[Path] = set()
    out = []
    for d in dirs:
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out, warnings


def print_tables(tables: Sequence[tuple[str, Sequence[str], Sequence[Sequence[str]]]]) -> None:
    """Print ``(title, header, rows)`` tables with rich: first column left-aligned, the others right; 140
    columns wide when stdout is not a terminal (log files), so tables do not wrap at 80."""
    import sys

    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 140)
    for title, header, rows in tables:
        table = Table(title=title)
        for i, h in enumerate(header):
            table.add_column(h, justify="left" if i == 0 else "right")
        for r in rows:
            table.add_row(*r)
        console.print(table)
