"""Causal (autoregressive) byte-level language model: encoder with causal attention + LM head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .encoder import Encoder


class CausalLM(nn.Module):
    """:class:`Encoder` (its blocks' attention must be causal) followed by a linear head to the vocabulary:
    ``logits[b, t]`` scores token ``t + 1`` from tokens ``<= t``.

    The encoder is pre-norm and already ends with a LayerNorm, so the head is a single bias-free Linear
    (as GPT-2 / nanoGPT). With ``tie_word_embeddings`` the head reuses the token embedding matrix (Press &
    Wolf 2017); the hidden states are then scaled by ``d_model ** -0.5`` before the product (as T5 does with
    tied embeddings), because the embedding is initialised N(0, 1) and unscaled logits would start with a
    standard deviation of about ``sqrt(d_model)``.

    Causality is the attention modules' job (``attention.causal=true``; ``longdoc.config.apply_task_defaults`` turns it on for
    the ``lm`` task). With LSH attention it is exact only within Reformer's chunking: which earlier positions
    share a chunk with position t depends on the hash buckets of all positions, later ones included.

    Args:
        vocab_size: V (256 for bytes). tie_word_embeddings: share the token embedding with the head.
        pad_id: embedding row kept at zero (``nn.Embedding(padding_idx=...)``); default ``None``: none, since in
            byte-level LM every id is a real byte and padding is told apart by ``padding_mask``.
        **encoder_kwargs: everything else :class:`Encoder` takes (d_model, n_heads, depth, d_ff, attention,
            position, max_seq_len, dropout, ...).

    ``forward(input_ids (B, N) int64, padding_mask (B, N) bool = None, global_attention_mask (B, N) bool = None)
    -> (B, N, V)`` logits in the hidden states' dtype.

    Raises:
        ValueError: from :class:`Encoder` for invalid settings (key named).
    """

    def __init__(self, vocab_size: int, tie_word_embeddings: bool = True, pad_id: int | None = None, **encoder_kwargs):
        super().__init__()
        self.encoder = Encoder(vocab_size=vocab_size, pad_id=pad_id, **encoder_kwargs)
        d_model = encoder_kwargs["d_model"]
        self.tie_word_embeddings = bool(tie_word_embeddings)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        if self.tie_word_embeddings:
            self.lm_head.weight = self.encoder.token_embedding.weight
        self.output_scale = d_model**-0.5 if self.tie_word_embeddings else 1.0

    def forward(self, input_ids: torch.Tensor, padding_mask: torch.Tensor | None = None,
                global_attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.encoder(input_ids, padding_mask, global_attention_mask)
        return self.lm_head(hidden * self.output_scale if self.tie_word_embeddings else hidden)


def next_token_targets(input_ids: torch.Tensor, padding_mask: torch.Tensor | None = None, *,
                       special_ids: tuple[int, ...] = (), row_mask: torch.Tensor | None = None,
                       ignore_index: int = -100) -> torch.Tensor:
    """Next-token labels for batches that carry none (causal self-pretraining on classification / retrieval data):
    ``labels[b, t] = input_ids[b, t + 1]`` where position ``t + 1`` is a real token that is not a special id,
    ``ignore_index`` elsewhere (after the last real token, at padding, at the last position, and where the next
    token is e.g. ``<cls>``, which is never a target).

    Args:
        input_ids: (B, N) int64. padding_mask: (B, N) bool, True = real token (None: all real).
        special_ids: ids that are never targets. row_mask: (B,) bool; rows where it is False get no target
            (samples repeated to even out DDP shards).

    Returns:
        (B, N) int64 labels.
    """
    b, n = input_ids.shape
    nxt = input_ids[:, 1:]
    ok = torch.ones_like(nxt, dtype=torch.bool) if padding_mask is None else padding_mask[:, 1:].bool()
    if special_ids:
        ok = ok & ~torch.isin(nxt, torch.tensor(list(special_ids), device=input_ids.device, dtype=input_ids.dtype))
    if row_mask is not None:
        ok = ok & row_mask.bool().view(b, 1)
    labels = torch.full_like(input_ids, ignore_index)
    labels[:, :-1] = torch.where(ok, nxt, torch.full_like(nxt, ignore_index))
    return labels


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor,
                    ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy (nats) over the positions with a target, computed in float32.

    Args:
        logits: (B, N, V) any float dtype. labels: (B, N) int64, ``ignore_index`` where there is no target.
        ignore_index: label of positions without a target (:data:`longdoc.data.IGNORE_INDEX`).

    Returns:
        ``(loss, count)``: the mean NLL over the targets (float32 scalar; 0 when there are none) and the number
        of targets (int64 scalar tensor), so epoch averages can be weighted by tokens.

    Raises:
        ValueError: ``logits`` and ``labels`` disagree in shape.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}: "
                         "expected (B, N, V) and (B, N)")
    keep = labels != ignore_index
    count = keep.sum()
    nll = F.cross_entropy(logits[keep].float(), labels[keep], reduction="sum")
    return nll / count.clamp_min(1), count
