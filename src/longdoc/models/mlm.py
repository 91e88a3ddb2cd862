"""Masked language modelling (BERT's MLM objective, Devlin et al. 2019, section 3.1) for self-pretraining on the
batches of any data module (Amos, Berant & Gupta 2023, "Never Train from Scratch"): the masking function
:func:`mask_tokens`, the model :class:`MaskedLM` and its loss / accuracy :func:`masked_lm_loss`.

Masking (:func:`mask_tokens`), on a batch ``input_ids`` (B, N) int64:

* Candidates: real tokens (``padding_mask`` True) that are neither a special id (``special_ids``: ``<pad>`` 0 and
  ``<cls>`` 1 for the classification / retrieval data) nor a global token (``global_attention_mask``: the CLS at
  position 0). Nothing else is ever masked.
* Which candidates are selected (each with probability exactly ``mask_rate``):

  - ``span_length == 1`` (default): token masking, an independent Bernoulli(``mask_rate``) per candidate (as
    HuggingFace's ``DataCollatorForLanguageModeling``; BERT's reference picks ``round(0.15 n)`` per sequence, the
    same rate in expectation).
  - ``span_length > 1``: span masking. Span lengths follow SpanBERT (Joshi et al. 2020, section 3.1): geometric
    (``span_sampling='geometric'``, ``P(L = l) = p (1 - p)^(l - 1)`` with ``p = 1 / span_length``, so the mean is
    ``span_length``; SpanBERT clips at 10, we do not, so the mean is exact) or all equal to ``span_length``
    (``'fixed'``, an integer). Spans are laid along each row as an alternating renewal process: span, gap, span,
    ... with geometric gaps of mean ``g = span_length (1 - mask_rate) / mask_rate`` (at least 1 token, so two
    spans never touch or overlap and each masked run is one span), started in its stationary state (in a span
    with probability ``mask_rate``, at a uniformly random point of it for fixed lengths). Every position is then
    inside a span with probability exactly ``mask_rate``, wherever it sits in the row; the selected tokens are
    the candidates inside a span (a span crossing CLS or the end of the row loses those positions). This needs
    ``g >= 1``, i.e. ``mask_rate <= span_length / (span_length + 1)``. SpanBERT instead samples spans until a
    15% budget is met, rejecting overlaps, which makes the rate vary with the position.

* Of the selected tokens, a fraction ``mask_token_ratio`` (0.8) becomes the mask token, ``random_token_ratio``
  (0.1) a token drawn uniformly from the real ids (``0 .. vocab_size - 1`` without ``special_ids``, never the mask
  token) and the rest (0.1) stays unchanged (BERT section 3.1 / appendix A.1). With span masking the choice is
  made once per span, as SpanBERT does (a random span gets a random token at each position).
* ``labels``: the original id at the selected positions, ``ignore_index`` elsewhere.

Every random draw comes from ``generator`` (a ``torch.Generator`` on the batch's device) or, when it is None, from
the device's global generator, so a caller that seeds per batch (``longdoc.lightning.ReproducibleRNG``) replays the
same masks.

The mask token is a new id ``vocab_size`` appended to the data's vocabulary, so no data module changes:
:class:`MaskedLM` embeds and predicts ``vocab_size + 1`` ids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .lm import CausalLM, next_token_loss

#: ``span_sampling`` values: SpanBERT's geometric span lengths, or every span ``span_length`` long.
SPAN_SAMPLINGS: tuple[str, ...] = ("geometric", "fixed")


def check_masking(mask_rate: float = 0.15, mask_token_ratio: float = 0.8, random_token_ratio: float = 0.1,
                  span_length: float = 1.0, span_sampling: str = "geometric") -> None:
    """The masking settings are consistent (keys named as in the ``mlm`` config block).

    Raises:
        ValueError: ``mask_rate`` outside (0, 1); a ratio outside [0, 1] or the two summing to more than 1;
            ``span_length`` < 1; an unknown ``span_sampling``; a non-integer ``span_length`` with ``'fixed'``;
            span masking with ``mask_rate > span_length / (span_length + 1)`` (no room for a gap between spans).
    """
    def number(key, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"mlm.{key} must be a number, got {v!r}")

    for key, v in (("mask_rate", mask_rate), ("mask_token_ratio", mask_token_ratio),
                   ("random_token_ratio", random_token_ratio), ("span_length", span_length)):
        number(key, v)
    if not 0 < mask_rate < 1:
        raise ValueError(f"mlm.mask_rate must be in (0, 1), got {mask_rate!r}; e.g. mlm.mask_rate=0.15 (BERT)")
    for key, v in (("mask_token_ratio", mask_token_ratio), ("random_token_ratio", random_token_ratio)):
        if not 0 <= v <= 1:
            raise ValueError(f"mlm.{key} must be in [0, 1], got {v!r}; BERT uses mlm.mask_token_ratio=0.8 "
                             "mlm.random_token_ratio=0.1")
    if mask_token_ratio + random_token_ratio > 1 + 1e-9:
        raise ValueError(f"mlm.mask_token_ratio + mlm.random_token_ratio must be <= 1 (the rest stays unchanged), got "
                         f"{mask_token_ratio} + {random_token_ratio}; e.g. 0.8 and 0.1 (BERT)")
    if span_sampling not in SPAN_SAMPLINGS:
        raise ValueError(f"mlm.span_sampling={span_sampling!r} is unknown: choose one of {list(SPAN_SAMPLINGS)}")
    if span_length < 1:
        raise ValueError(f"mlm.span_length must be >= 1 (1 = token masking), got {span_length!r}; e.g. "
                         "mlm.span_length=3")
    if span_sampling == "fixed" and float(span_length) != int(span_length):
        raise ValueError(f"mlm.span_length={span_length} must be an integer with mlm.span_sampling=fixed")
    if span_length > 1 and mask_rate > span_length / (span_length + 1):
        raise ValueError(f"mlm.mask_rate={mask_rate} is too high for spans of mean length {span_length}: spans are "
                         f"separated by at least one token, so mlm.mask_rate must be <= "
                         f"{span_length / (span_length + 1):.3f}; lower it or raise mlm.span_length")


def _geometric(shape: tuple[int, ...], mean: float, device, generator) -> torch.Tensor:
    """Geometric variables on {1, 2, ...} with the given mean (success probability ``1 / mean``), int64."""
    out = torch.empty(shape, device=device, dtype=torch.float32)
    return out.geometric_(1.0 / mean, generator=generator).long()


def span_mask(shape: tuple[int, int], mask_rate: float, span_length: float, span_sampling: str = "geometric", *,
              device=None, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Spans of each row of a (B, N) grid, laid as a stationary alternating renewal process (see the module
    docstring): every position is inside a span with probability ``mask_rate``; spans never touch.

    Returns:
        ``(in_span, span_start)``: (B, N) bool, and (B, N) int64, the first position of the segment (span or gap)
        each position is in (clipped at 0 for a span that began before the row).
    """
    b, n = shape
    m = float(span_length)
    gap_mean = m * (1.0 - mask_rate) / mask_rate
    k = n + 1  # every segment is >= 1 long, so n + 1 of them cover the row
    start_in_span = torch.rand((b, 1), device=device, generator=generator) < mask_rate
    if span_sampling == "fixed":
        spans = torch.full((b, k), int(m), device=device, dtype=torch.long)
        first_span = torch.randint(1, int(m) + 1, (b,), device=device, generator=generator)  # uniform residual
    else:
        spans = _geometric((b, k), m, device, generator)
        first_span = spans[:, 0]  # memoryless: the residual of a geometric span is geometric
    gaps = _geometric((b, k), gap_mean, device, generator)
    seg = torch.arange(k, device=device)
    is_span = (seg % 2 == 0) == start_in_span  # (B, K): segment kind, alternating from the start state
    lengths = torch.where(is_span, spans, gaps)
    lengths[:, 0] = torch.where(start_in_span[:, 0], first_span, gaps[:, 0])
    ends = lengths.cumsum(1)  # exclusive end of each segment
    pos = torch.arange(n, device=device).expand(b, n).contiguous()
    idx = torch.searchsorted(ends, pos, right=True).clamp_max(k - 1)  # segment of each position
    in_span = is_span.gather(1, idx)
    start = torch.where(idx > 0, ends.gather(1, (idx - 1).clamp_min(0)), torch.zeros_like(idx))
    return in_span, start


def mask_tokens(input_ids: torch.Tensor, padding_mask: torch.Tensor | None = None, *, vocab_size: int,
                mask_token_id: int | None = None, special_ids: Sequence[int] = (0, 1),
                global_attention_mask: torch.Tensor | None = None, row_mask: torch.Tensor | None = None,
                mask_rate: float = 0.15, mask_token_ratio: float = 0.8, random_token_ratio: float = 0.1,
                span_length: float = 1.0, span_sampling: str = "geometric", ignore_index: int = -100,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of a batch (see the module docstring for the scheme).

    Args:
        input_ids: (B, N) int64. padding_mask: (B, N) bool, True = real token (None: all real).
        vocab_size: the data's number of ids; random replacements are drawn from ``0 .. vocab_size - 1`` without
            ``special_ids``. mask_token_id: the mask token (default ``vocab_size``).
        special_ids: ids never masked nor drawn as replacements (``<pad>``, ``<cls>``).
        global_attention_mask: (B, N) bool; global tokens (the CLS) are never masked.
        row_mask: (B,) bool; rows where it is False get no target (samples repeated to even out DDP shards).
        mask_rate, mask_token_ratio, random_token_ratio, span_length, span_sampling: see :func:`check_masking`.
        ignore_index: label of the positions without a target.
        generator: torch generator on ``input_ids.device`` (None: the device's global one).

    Returns:
        ``(masked_ids, labels)``: (B, N) int64 each; ``labels`` = the original id at the selected positions,
        ``ignore_index`` elsewhere.

    Raises:
        ValueError: invalid settings (:func:`check_masking`); no id left to draw random replacements from.
    """
    check_masking(mask_rate, mask_token_ratio, random_token_ratio, span_length, span_sampling)
    device, (b, n) = input_ids.device, input_ids.shape
    mask_token_id = vocab_size if mask_token_id is None else mask_token_id
    specials = torch.tensor(sorted({int(s) for s in special_ids}), device=device, dtype=input_ids.dtype)
    candidates = ~torch.isin(input_ids, specials)
    if padding_mask is not None:
        candidates &= padding_mask.bool()
    if global_attention_mask is not None:
        candidates &= ~global_attention_mask.bool()
    if row_mask is not None:
        candidates &= row_mask.bool().view(b, 1)
    if span_length == 1:
        selected = (torch.rand((b, n), device=device, generator=generator) < mask_rate) & candidates
        choice = torch.rand((b, n), device=device, generator=generator)
    else:
        in_span, start = span_mask((b, n), mask_rate, span_length, span_sampling, device=device, generator=generator)
        selected = in_span & candidates
        choice = torch.rand((b, n), device=device, generator=generator).gather(1, start)  # one draw per span
    pool = torch.arange(vocab_size, device=device)
    pool = pool[~torch.isin(pool, specials.to(pool.dtype))]
    if len(pool) == 0:
        raise ValueError(f"no token id is left for random replacements: vocab_size={vocab_size}, "
                         f"special_ids={sorted(set(special_ids))}")
    random_ids = pool[torch.randint(len(pool), (b, n), device=device, generator=generator)].to(input_ids.dtype)
    to_mask = selected & (choice < mask_token_ratio)
    to_random = selected & (choice >= mask_token_ratio) & (choice < mask_token_ratio + random_token_ratio)
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, ignore_index))
    return masked, labels


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor,
                   ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean cross-entropy (nats, float32) over the masked positions and how many of them the argmax gets right.

    Args:
        logits: (B, N, V) any float dtype. labels: (B, N) int64, ``ignore_index`` where there is no target.

    Returns:
        ``(loss, count, correct)``: the mean NLL over the targets (0 when there are none, still connected to
        ``logits`` so every parameter gets a gradient), the number of targets and of correct argmax predictions
        (int64 scalar tensors), so epoch values can be weighted by tokens.

    Raises:
        ValueError: ``logits`` and ``labels`` disagree in shape.
    """
    loss, count = next_token_loss(logits, labels, ignore_index)  # the same masked mean NLL as the LM's
    keep = labels != ignore_index
    correct = (logits[keep].argmax(-1) == labels[keep]).sum()
    return loss, count, correct


class MaskedLM(CausalLM):
    """:class:`Encoder` with bidirectional attention followed by a linear head to ``vocab_size + 1`` ids (the
    data's ids and the mask token ``vocab_size``): ``logits[b, t]`` scores the original token at position ``t``.

    The head is tied to the token embedding by default (Press & Wolf 2017, as BERT and :class:`CausalLM`), with
    the hidden states scaled by ``d_model ** -0.5`` before the product (the embedding is initialised N(0, 1));
    bias-free, since the encoder already ends with a LayerNorm.

    Args:
        vocab_size: the data's number of ids (V); the model embeds and predicts V + 1.
        tie_word_embeddings: share the token embedding with the head.
        pad_id: embedding row kept at zero (None for byte data where id 0 is a real byte).
        **encoder_kwargs: everything else :class:`Encoder` takes (d_model, n_heads, depth, d_ff, attention,
            position, max_seq_len, dropout, reversible, ...). The attention should not be causal.

    Attributes:
        mask_token_id: ``vocab_size``.

    ``forward(input_ids (B, N) int64, padding_mask (B, N) bool = None, global_attention_mask (B, N) bool = None)
    -> (B, N, V + 1)`` logits in the hidden states' dtype.

    Raises:
        ValueError: from :class:`Encoder` for invalid settings (key named).
    """

    def __init__(self, vocab_size: int, tie_word_embeddings: bool = True, pad_id: int | None = 0, **encoder_kwargs):
        # the LM's encoder + tied head over one more id; only the attention (bidirectional) and the targets differ
        super().__init__(vocab_size=int(vocab_size) + 1, tie_word_embeddings=tie_word_embeddings, pad_id=pad_id,
                         **encoder_kwargs)
        self.vocab_size = int(vocab_size)
        self.mask_token_id = self.vocab_size
