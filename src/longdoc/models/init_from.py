"""Start a model from the encoder of another longdoc run (``model.init_from``): fine-tuning after self-pretraining
(Amos, Berant & Gupta 2023, "Never Train from Scratch"), or a new task on a trained encoder.

The encoder is everything under ``net.encoder.`` in a longdoc checkpoint's ``state_dict``: token and position
embeddings, the blocks and the final norm. The task head always starts fresh. Loading runs no code from the file
(``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger("longdoc")

#: Prefix of the encoder's tensors in a longdoc checkpoint's ``state_dict`` (``LongDocModule.net.encoder``).
ENCODER_PREFIX = "net.encoder."
#: Position tables that ``extend_positions`` may grow along their first (position) axis.
POSITION_TABLES = ("position.weight", "position.e1", "position.e2")
#: Files of a run directory tried in order.
RUN_DIR_CHECKPOINTS = ("checkpoints/best.ckpt", "checkpoints/last.ckpt")


@dataclass
class InitReport:
    """What :func:`init_encoder_from` did, by encoder tensor name (without the ``net.encoder.`` prefix)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    extended: list[str] = field(default_factory=list)  # position tables tiled to the new length
    truncated: list[str] = field(default_factory=list)  # token embeddings that lost rows the source task added
    left_at_init: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unused: list[str] = field(default_factory=list)  # in the checkpoint's encoder, not in the model


def resolve_source(source: str | Path) -> Path:
    """A checkpoint file, or a run directory (its ``checkpoints/best.ckpt``, else ``checkpoints/last.ckpt``; for a
    self-pretraining run directory, ``experiment=spt/*``, those of its ``finetune`` stage).

    Raises:
        FileNotFoundError: nothing there, naming what was looked for.
    """
    path = Path(source)
    if path.is_file():
        return path
    if path.is_dir():
        for run_dir in (path, path / "finetune"):
            for name in RUN_DIR_CHECKPOINTS:
                if (run_dir / name).is_file():
                    return run_dir / name
        raise FileNotFoundError(f"model.init_from={str(source)!r} is a directory without {' or '.join(RUN_DIR_CHECKPOINTS)}"
                                "; give a longdoc run directory or a .ckpt file")
    raise FileNotFoundError(f"model.init_from={str(source)!r} does not exist; give a longdoc run directory or a "
                            ".ckpt file")


def load_encoder_state(source: str | Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """The encoder tensors of a longdoc checkpoint, keyed without the ``net.encoder.`` prefix.

    Raises:
        FileNotFoundError: see :func:`resolve_source`.
        ValueError: the file cannot be read with ``weights_only=True`` (corrupt, or it needs arbitrary code to
            unpickle), or it holds no longdoc encoder.
    """
    path = resolve_source(source)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "Unsupported global" in ln), lines[0] if lines else "")
        raise ValueError(f"model.init_from: {path} cannot be loaded with torch.load(weights_only=True) "
                         f"({type(err).__name__}: {detail}); it is corrupt or not a plain-tensor checkpoint, and "
                         "longdoc runs no code from a checkpoint") from err
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else {}
    encoder = {k[len(ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    if not encoder:
        raise ValueError(f"model.init_from: {path} has no tensors under {ENCODER_PREFIX!r}; it is not a longdoc "
                         "checkpoint (for HuggingFace weights see longdoc.pretrained)")
    return path, encoder


def tile_rows(table: torch.Tensor, rows: int) -> torch.Tensor:
    """``table`` (L, D) repeated block-wise along dim 0 to (rows, D): row i is ``table[i % L]`` (the way Longformer
    initialised its 4096 positions from RoBERTa's 512, Beltagy et al. 2020 section 5)."""
    reps = -(-rows // table.shape[0])
    return table.repeat(reps, *([1] * (table.dim() - 1)))[:rows]


def init_encoder_from(encoder: nn.Module, source: str | Path, *, extend_positions: bool = False) -> InitReport:
    """Copy the encoder tensors of a longdoc checkpoint into ``encoder`` (in place, under ``torch.no_grad``).

    Args:
        encoder: the :class:`~longdoc.models.Encoder` of the new model.
        source: checkpoint file or run directory (:func:`resolve_source`).
        extend_positions: position tables (learned ``position.weight``, axial ``position.e1`` / ``e2``) with fewer
            rows than the model's are tiled block-wise (:func:`tile_rows`) instead of refused; tables with more rows
            are cut to the model's.

    A token embedding with more rows than the model's (ids the pretraining objective appended, e.g. the MLM
    ``[MASK]`` token) is cut to the model's rows; the extra rows are reported.

    Returns:
        :class:`InitReport`, also logged: loaded / extended / truncated / left at initialisation / unused tensors.

    Raises:
        FileNotFoundError, ValueError: see :func:`load_encoder_state`.
        ValueError: any other shape mismatch, naming the tensor and both shapes (and, for position tables, the
            switch ``model.init_extend_positions=true``).
    """
    path, state = load_encoder_state(source)
    report = InitReport(source=str(path))
    own = encoder.state_dict()
    with torch.no_grad():
        for name, target in own.items():
            if name not in state:
                report.left_at_init.append(name)
                continue
            value = state[name]
            if value.shape != target.shape:
                if name in POSITION_TABLES and value.shape[1:] == target.shape[1:]:
                    if value.shape[0] < target.shape[0] and not extend_positions:
                        raise ValueError(f"model.init_from: {name} has {value.shape[0]} positions in {path} but the "
                                         f"model needs {target.shape[0]} (shape {tuple(value.shape)} vs "
                                         f"{tuple(target.shape)}); set model.init_extend_positions=true to tile the "
                                         "pretrained positions block-wise, or keep the pretraining length")
                    value = tile_rows(value, target.shape[0])
                    report.extended.append(name)
                elif name == "token_embedding.weight" and value.shape[0] > target.shape[0] \
                        and value.shape[1:] == target.shape[1:]:
                    value = value[: target.shape[0]]
                    report.truncated.append(name)
                else:
                    raise ValueError(f"model.init_from: {name} is {tuple(value.shape)} in {path} but "
                                     f"{tuple(target.shape)} in this model; use the same model.* sizes (d_model, "
                                     "n_heads, d_ff, depth, attention projections) as the pretrained run")
            target.copy_(value.to(target.dtype))
            report.loaded.append(name)
    report.unused = sorted(set(state) - set(own))
    log.info("model.init_from=%s: loaded %d encoder tensors%s%s; left at initialisation: %s; unused: %s", path,
             len(report.loaded), f", tiled {report.extended}" if report.extended else "",
             f", cut the extra token rows of {report.truncated}" if report.truncated else "",
             report.left_at_init or "none", report.unused or "none")
    return report


def freeze_embeddings(encoder: nn.Module) -> list[str]:
    """Stop gradients to the embeddings (``model.freeze_embeddings``): token and position tables, and the token-type
    table and embedding LayerNorm of the HF layouts when the encoder has them; returns their names."""
    names = []
    for name, p in encoder.named_parameters():
        if name.startswith(("token_embedding.", "position.", "token_type_embedding.", "embedding_norm.")):
            p.requires_grad_(False)
            names.append(name)
    log.info("model.freeze_embeddings: %s frozen", names)
    return names
