"""Loading what ``train.py`` saved: the one place a checkpoint is read for every ``evaluate.py`` mode.

* :func:`checkpoint_file` -- the file ``ckpt_path`` names: itself, or a run directory's best checkpoint;
* :func:`read_checkpoint` -- the file's ``hyper_parameters`` and ``state_dict`` (the only ``torch.load``);
* :func:`load_module` -- the :class:`longdoc.lightning.LongDocModule` rebuilt from them, weights loaded;
* :func:`load_module_and_data` -- the module and its data module, rebuilt from the run configuration saved in
  the checkpoint with overrides merged over it;
* :func:`load_from_config` -- the same from ``evaluate.yaml``'s ``ckpt_path`` / ``attention`` / ``data`` keys.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checks import CheckpointNotFoundError, ConfigError

log = logging.getLogger("longdoc")

EXAMPLE_PATH = "outputs/train/runs/<run>/checkpoints/best.ckpt"
#: The checkpoint of a ``train.py`` run directory that ``ckpt_path=<run dir>`` means, tried in order: a plain run's
#: best checkpoint, then a self-pretraining run's fine-tuned one (``experiment=spt/...``: ``<run>/finetune``).
RUN_DIR_CHECKPOINTS = ("checkpoints/best.ckpt", "finetune/checkpoints/best.ckpt")
#: How many entries / checkpoint files of a directory an error message lists.
LISTED = 12


@dataclass
class Checkpoint:
    """A Lightning checkpoint written by ``train.py``, on the CPU.

    Attributes:
        path: the file. hparams: its ``hyper_parameters`` (``model``, ``vocab_size``, ``num_classes``,
        ``max_seq_len``, ``config`` = the resolved run configuration, ...). state_dict: the module's weights.
    """

    path: Path
    hparams: dict
    state_dict: dict


def _listing(names: list[str]) -> str:
    more = f", ... ({len(names) - LISTED} more)" if len(names) > LISTED else ""
    return ", ".join(names[:LISTED]) + more


def checkpoint_file(ckpt_path: str | os.PathLike) -> Path:
    """The checkpoint file ``ckpt_path`` names: a file is itself; a ``train.py`` run directory means the first of
    :data:`RUN_DIR_CHECKPOINTS` in it (its ``checkpoints/best.ckpt``, or ``finetune/checkpoints/best.ckpt`` for a
    self-pretraining run), logged.

    Raises:
        CheckpointNotFoundError (a ConfigError and FileNotFoundError): nothing at ``ckpt_path`` (``ckpt_path=...
            does not exist; ...``); a directory without
            any of :data:`RUN_DIR_CHECKPOINTS`: the message lists what the directory holds, the ``*.ckpt`` files
            below it, and what to pass instead.
    """
    path = Path(ckpt_path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointNotFoundError(f"ckpt_path={str(path)!r} does not exist; pass a file written by train.py, "
                                f"e.g. {EXAMPLE_PATH}, or its run directory")
    for name in RUN_DIR_CHECKPOINTS:
        if (path / name).is_file():
            log.info("ckpt_path=%s is a run directory: using its %s", path, name)
            return path / name
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    ckpts = sorted(str(p.relative_to(path)) for p in path.rglob("*.ckpt") if p.is_file())
    found = f"; checkpoint files below it: {_listing(ckpts)}" if ckpts else "; no *.ckpt file below it"
    fix = (f"pass one of them, e.g. ckpt_path={path / ckpts[0]}" if ckpts else
           f"pass a checkpoint file written by train.py, e.g. {EXAMPLE_PATH}, or a run directory holding one")
    raise CheckpointNotFoundError(f"ckpt_path={str(path)!r} is a directory without {' or '.join(RUN_DIR_CHECKPOINTS)} "
                            f"(it holds: {_listing(entries) or 'nothing'}{found}); {fix}")


def read_checkpoint(ckpt_path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by ``train.py`` onto the CPU: the file ``ckpt_path``, or the best checkpoint of
    the run directory ``ckpt_path`` (:func:`checkpoint_file`).

    Raises:
        CheckpointNotFoundError (a ConfigError and FileNotFoundError): no file at ``ckpt_path`` (``ckpt_path=... does not exist; ...``), or a directory without
            a best checkpoint (see :func:`checkpoint_file`).
        ConfigError: the file cannot be read (truncated, not a torch file) or holds no ``hyper_parameters`` /
            ``state_dict`` (not written by longdoc's ``train.py``); the message names the file.
    """
    import torch

    path = checkpoint_file(ckpt_path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # RuntimeError (zip), UnpicklingError, EOFError, ...
        raise ConfigError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); it is truncated or not a "
                         "checkpoint written by train.py") from err
    missing = [k for k in ("hyper_parameters", "state_dict") if not isinstance(ckpt, Mapping) or k not in ckpt]
    if missing:
        raise ConfigError(f"checkpoint {path} has no {' / '.join(repr(k) for k in missing)}: not a checkpoint "
                         "written by longdoc's train.py")
    return Checkpoint(path, dict(ckpt["hyper_parameters"]), ckpt["state_dict"])


def load_module(ckpt_path: str | os.PathLike, attention_overrides: Mapping[str, Any] | None = None):
    """The :class:`longdoc.lightning.LongDocModule` of a checkpoint, weights loaded (CPU, training mode as built).

    ``attention_overrides`` replaces attention hyperparameters that do not change the weights (e.g.
    ``{"n_hashes": 8}`` for LSH evaluated with more hash rounds).

    Raises:
        CheckpointNotFoundError / ConfigError: see :func:`read_checkpoint`. RuntimeError: weights that do not fit the
            rebuilt module (``load_state_dict``'s message).
    """
    from ..lightning import LongDocModule

    ckpt = read_checkpoint(ckpt_path)
    hp = ckpt.hparams
    if attention_overrides:
        model = dict(hp["model"])
        model["attention"] = {**model["attention"], **attention_overrides}
        hp = {**hp, "model": model}
    module = LongDocModule(**hp)
    module.load_state_dict(ckpt.state_dict)
    return module


def load_module_and_data(ckpt_path: str | os.PathLike, *, attention_overrides: Mapping[str, Any] | None = None,
                         data_overrides: Mapping[str, Any] | None = None):
    """``(module, data module)`` of a checkpoint: :func:`load_module`, and the data module instantiated from the
    ``data`` section of the run configuration saved in it with ``data_overrides`` merged over it (not set up: no
    data is read yet).

    Raises:
        CheckpointNotFoundError / ConfigError / RuntimeError: see :func:`load_module`; ConfigError also for a
            checkpoint without a saved data config.
    """
    import hydra
    from omegaconf import OmegaConf

    module = load_module(ckpt_path, attention_overrides)
    saved = OmegaConf.create(module.hparams.config or {})
    if "data" not in saved:
        raise ConfigError(f"checkpoint {ckpt_path} has no saved data config; was it written by longdoc's train.py?")
    return module, hydra.utils.instantiate(OmegaConf.merge(saved.data, dict(data_overrides or {})), _convert_="all")


def set_keys(section: Any) -> dict[str, Any]:
    """The keys of a config section (DictConfig, mapping or None) whose value is not None, resolved."""
    from omegaconf import OmegaConf

    if section is None:
        return {}
    plain = OmegaConf.to_container(section, resolve=True) if OmegaConf.is_config(section) else dict(section)
    return {k: v for k, v in plain.items() if v is not None}


def load_from_config(cfg):
    """:func:`load_module_and_data` of ``cfg.ckpt_path`` with the non-null ``cfg.attention`` keys overriding the
    saved attention and the non-null ``cfg.data`` keys merged over the saved data config (``conf/evaluate.yaml``).

    Raises:
        ConfigError: no ``ckpt_path``; the errors of :func:`load_module_and_data`.
    """
    if not cfg.get("ckpt_path"):
        raise ConfigError(f"ckpt_path is not set: pass ckpt_path=<checkpoint>, e.g. ckpt_path={EXAMPLE_PATH}")
    return load_module_and_data(cfg.ckpt_path, attention_overrides=set_keys(cfg.get("attention")) or None,
                                data_overrides=set_keys(cfg.get("data")))
