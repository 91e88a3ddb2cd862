"""The training configuration (``conf/train.yaml``) and models from it, for the report modes that build a model
without a checkpoint (``efficiency``, ``attention_pattern``) or look inside one."""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
