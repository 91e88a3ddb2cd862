"""Reading a HuggingFace checkpoint directory without running any of its code.

A directory is recognised by its files: ``config.json`` (HF ``PretrainedConfig.to_json_file``) and the weights,
``model.safetensors`` (or a sharded ``model.safetensors.index.json``), else ``pytorch_model.bin`` (or
``pytorch_model.bin.index.json``). Safetensors files hold plain tensors; ``.bin`` files are pickles and are read with
``torch.load(weights_only=True)``, which unpickles tensors and plain containers only, so a file that needs any other
object is refused (never executed). ``config.json`` is read as JSON: transformers is not needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

#: Checkpoint kinds: HF ``model_type`` values each kind accepts.
MODEL_TYPES: dict[str, tuple[str, ...]] = {"longformer": ("longformer",), "bert": ("bert",), "roberta": ("roberta",)}
#: Weight files, in the order tried (safetensors first: no pickle at all).
WEIGHT_FILES: tuple[str, ...] = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                                 "pytorch_model.bin.index.json")
EXPECTED = ("config.json and model.safetensors (or model.safetensors.index.json with its shards, or "
            "pytorch_model.bin), "
            "as written by transformers' save_pretrained for LongformerModel / LongformerForMaskedLM, BertModel / "
            "BertForMaskedLM or RobertaModel / RobertaForMaskedLM")


class CheckpointError(ValueError):
    """A checkpoint directory, its config or its tensors cannot be used; the message says what was found and what
    was expected."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`inspect_checkpoint` found in a directory.

    Attributes:
        path: the directory. kind: 'longformer' | 'bert' | 'roberta' (from ``config.json``'s ``model_type``).
        config: ``config.json`` as a dict. weights: the weight file (safetensors preferred).
        tokenizer_file: ``tokenizer.json`` (HF ``tokenizers``) when present, else None.
    """

    path: Path
    kind: str
    config: dict[str, Any]
    weights: Path
    tokenizer_file: Path | None


def _listing(path: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    return ", ".join(names[:20]) + (f", ... ({len(names)} entries)" if len(names) > 20 else "") if names else "nothing"


def inspect_checkpoint(path: str | Path, kind: str | None = None) -> CheckpointInfo:
    """Identify a HF checkpoint directory from its files and ``config.json`` (no tensor is read).

    Args:
        path: the directory (``save_pretrained`` layout). kind: the expected kind ('longformer', 'bert',
            'roberta'), or None to take ``config.json``'s ``model_type``.

    Raises:
        CheckpointError: not a directory; no ``config.json`` or no weight file (the message lists the files found
            and those expected); ``config.json`` unreadable; a ``model_type`` that is not ``kind`` (or no known kind).
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{str(path)!r} is not a directory; a HF checkpoint directory holds {EXPECTED}")
    cfg_file = path / "config.json"
    weights = next((path / n for n in WEIGHT_FILES if (path / n).is_file()), None)
    if not cfg_file.is_file() or weights is None:
        missing = "config.json" if not cfg_file.is_file() else "a weight file"
        raise CheckpointError(f"{path} is not a HF checkpoint directory: it has no {missing} (found: {_listing(path)}); "
                              f"expected {EXPECTED}. A TensorFlow / Flax-only checkpoint (tf_model.h5, "
                              "flax_model.msgpack) must be converted to PyTorch first")
    try:
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{cfg_file} cannot be read as JSON ({err})") from err
    if not isinstance(config, dict):
        raise CheckpointError(f"{cfg_file} holds {type(config).__name__}, not a JSON object")
    model_type = config.get("model_type")
    found = next((k for k, types in MODEL_TYPES.items() if model_type in types), None)
    if kind is not None:
        if kind not in MODEL_TYPES:
            raise CheckpointError(f"unknown checkpoint kind {kind!r}: choose one of {list(MODEL_TYPES)}")
        if found != kind:
            raise CheckpointError(f"{cfg_file} has model_type={model_type!r}, not a {kind} checkpoint "
                                  f"(model_type {' / '.join(MODEL_TYPES[kind])}); "
                                  + (f"load it as kind={found}" if found else
                                     f"longdoc reads the kinds {list(MODEL_TYPES)}"))
    elif found is None:
        raise CheckpointError(f"{cfg_file} has model_type={model_type!r}; longdoc reads {list(MODEL_TYPES)} checkpoints")
    tok = path / "tokenizer.json"
    return CheckpointInfo(path, found, config, weights, tok if tok.is_file() else None)


def _load_file(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(file), device="cpu")
        except Exception as err:  # SafetensorError, OSError
            raise CheckpointError(f"{file} cannot be read as safetensors ({type(err).__name__}: {err}); it is "
                                  "truncated or not a safetensors file") from err
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError for objects outside the allow-list, RuntimeError, EOFError
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "Unsupported global" in ln), lines[0] if lines else "")
        raise CheckpointError(f"{file} cannot be loaded with torch.load(weights_only=True) ({type(err).__name__}: "
                              f"{detail}): it is corrupt, or its pickle needs objects other than tensors and plain "
                              "containers, and longdoc runs no code from a checkpoint; convert it to safetensors "
                              "where you trust it (transformers: from_pretrained(...).save_pretrained(dir, "
                              "safe_serialization=True))") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{file} does not hold a flat dict of tensors (a state_dict)")
    return state


def load_state_dict(info: CheckpointInfo) -> dict[str, torch.Tensor]:
    """All tensors of the checkpoint (every shard of a sharded one), on the CPU, in their stored dtypes.

    Raises:
        CheckpointError: an unreadable file, a pickle that needs arbitrary objects (refused, see the module
            docstring), a shard index naming a missing file.
    """
    if not info.weights.name.endswith(".index.json"):
        return _load_file(info.weights)
    try:
        weight_map = json.loads(info.weights.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{info.weights} is not a shard index with a weight_map ({err})") from err
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        file = info.path / shard
        if not file.is_file():
            raise CheckpointError(f"{info.weights} names the shard {shard}, which is not in {info.path}")
        state.update(_load_file(file))
    return state
