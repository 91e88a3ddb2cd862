"""Attention blocks: one algorithm per file, each a functional core on (B, H, N, Dh) tensors and an
``nn.Module`` on (B, N, D) hidden states with the shared signature
``forward(hidden, padding_mask=None, global_attention_mask=None)``.
"""

from __future__ import annotations

from torch import nn

from .full import FullAttention, full_attention
from .local_global import LocalGlobalAttention, local_global_attention
from .lsh import LSHAttention, default_n_buckets, hash_buckets, lsh_attention

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


__all__ = [
    "ATTENTION_REGISTRY", "build_attention",
    "FullAttention", "LSHAttention", "LocalGlobalAttention",
    "full_attention", "lsh_attention", "local_global_attention", "hash_buckets", "default_n_buckets",
]
