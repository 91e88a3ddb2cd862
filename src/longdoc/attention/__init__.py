"""Attention blocks: one algorithm per file, each a functional core on (B, H, N, Dh) tensors and an
``nn.Module`` on (B, N, D) hidden states with the shared signature
``forward(hidden, padding_mask=None, global_attention_mask=None)``.

Every module also says which keys each query attends, from its own masking code: ``attended_pairs(padding_mask,
global_attention_mask, *, seq_len=None)`` -> (B, H, N, N) bool (LSH: from the buckets it used, also per hash
round), and measures its attention probabilities through its kernel (``attention_probabilities(hidden, ...)`` ->
(B, H, N, N) float32); the functional forms are :func:`full_pairs`, :func:`local_global_pairs`, :func:`lsh_pairs`.
"""

from __future__ import annotations

from torch import nn

from ._common import MultiHeadProjection
from .full import FullAttention, full_attention, full_pairs
from .local_global import LocalGlobalAttention, local_global_attention, local_global_pairs
from .lsh import LSHAttention, default_n_buckets, hash_buckets, lsh_attention, lsh_pairs

ATTENTION_REGISTRY: dict[str, type[nn.Module]] = {
    "full": FullAttention,
    "lsh": LSHAttention,
    "local_global": LocalGlobalAttention,
}


def build_attention(name: str, d_model: int, n_heads: int, **kwargs) -> nn.Module:
    """Build the attention module registered under ``name`` ('full', 'lsh', 'local_global').

    Raises:
        ValueError: unknown name (the message lists the choices) or an argument the class does not take.
    """
    if name not in ATTENTION_REGISTRY:
        raise ValueError(f"unknown attention {name!r}: choose one of {sorted(ATTENTION_REGISTRY)} "
                         f"(e.g. `attention=lsh` on the command line)")
    cls = ATTENTION_REGISTRY[name]
    try:
        return cls(d_model=d_model, n_heads=n_heads, **kwargs)
    except TypeError as err:
        raise ValueError(f"attention {name!r}: {err}; see longdoc/conf/attention/{name}.yaml for its keys") from err


def attention_name(module: nn.Module) -> str:
    """Registry name ('full', 'lsh', 'local_global') of an attention module (its exact class first, then a
    subclass).

    Raises:
        ValueError: not an instance of a registered attention class.
    """
    for name, cls in ATTENTION_REGISTRY.items():
        if type(module) is cls:
            return name
    for name, cls in ATTENTION_REGISTRY.items():
        if isinstance(module, cls):
            return name
    raise ValueError(f"{type(module).__name__} is not a registered attention module ({sorted(ATTENTION_REGISTRY)})")


__all__ = [
    "ATTENTION_REGISTRY", "build_attention", "attention_name", "MultiHeadProjection",
    "FullAttention", "LSHAttention", "LocalGlobalAttention",
    "full_attention", "lsh_attention", "local_global_attention", "hash_buckets", "default_n_buckets",
    "full_pairs", "local_global_pairs", "lsh_pairs",
]
