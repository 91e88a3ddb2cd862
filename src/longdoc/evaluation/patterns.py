"""``evaluate.py mode=attention_pattern``: which keys each query attends, read from the kernels themselves.

For one input, every attention layer's inputs are captured with forward hooks during a real forward pass of
the encoder (for LSH also the hash buckets the layer actually used: the layer's ``bucket_mode="record"``
mechanism of the reversible layers). From them:

* the **attended pairs** (B, H, N, N) bool -- query ``i`` (row) attends key ``j`` (column) -- from the same
  code the kernels use to mask:

  - ``local_global`` (Beltagy et al. 2020, section 3.1): the kernel's mask preparation and its
    ``flex_mask_mod`` (the ``mask_mod`` its flex backend runs; the blocked backend computes the same
    function): key ``j`` real and ``|i - j| <= w * d`` and ``(i - j) % d == 0`` (dilated window), or ``j``
    global; global queries attend every real key; ``j <= i`` when causal;
  - ``lsh`` (Kitaev et al. 2020, section 2): the kernel's own sort plan (``_make_plan``) and mask
    (``_disallowed``) on the recorded buckets: per hash round, the keys in the query's chunk and
    ``n_chunks_before`` / ``n_chunks_after`` neighbouring chunks of the sorted order, real, not the query
    itself unless it has no other target (``rounds``: in how many rounds each pair was attended);
  - ``full`` (Vaswani et al. 2017): every real key (``j <= i`` when causal).

  Rows of padding queries are all False (their outputs are never used).
* the **attention probabilities** (B, H, N, N) float32 -- the row-stochastic matrix ``P`` of the layer
  (for LSH the rounds combined as in the kernel, eq. (6)-(7)), measured by running the layer's own
  functional core with one-hot values (the output is ``P @ V``, so ``V = e_j`` reads column ``j``):
  ``ceil(N / Dh)`` calls of the real kernel, no re-derivation.

Outputs: ``attention_pattern.png`` (one panel per attention type, or per layer of a checkpoint; top row the
attended pairs, bottom row the probabilities on a log scale).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger("longdoc")


# ----------------------------------------------------------------------------------------------
# attended pairs, per attention type
# ----------------------------------------------------------------------------------------------


def _real(padding_mask: torch.Tensor | None, b: int, n: int, device) -> torch.Tensor:
    return padding_mask if padding_mask is not None else torch.ones(b, n, dtype=torch.bool, device=device)


def full_pairs(padding_mask: torch.Tensor | None, n: int | None = None, *, causal: bool = False) -> torch.Tensor:
    """Pairs of exact attention (:func:`longdoc.attention.full_attention`): real query ``i`` attends real key ``j``
    (and ``j <= i`` when ``causal``).

    Args:
        padding_mask: (B, N) bool, True for real tokens, or None (then ``n`` gives N and B = 1).

    Returns:
        (B, N, N) bool.

    Raises:
        ValueError: neither ``padding_mask`` nor ``n`` given.
    """
    if padding_mask is None:
        if n is None:
            raise ValueError("full_pairs needs padding_mask or n")
        padding_mask = torch.ones(1, n, dtype=torch.bool)
    real = padding_mask.bool()
    out = real[:, :, None] & real[:, None, :]
    if causal:
        out &= torch.ones(out.shape[-1], out.shape[-1], dtype=torch.bool, device=out.device).tril()
    return out


def local_global_pairs(padding_mask: torch.Tensor | None, global_attention_mask: torch.Tensor | None, *,
                       attention_window: int, attention_dilation: int = 1, causal: bool = False,
                       n: int | None = None) -> torch.Tensor:
    """Pairs of Longformer attention (:func:`longdoc.attention.local_global_attention`), from the kernel's code.

    Query ``i`` attends key ``j`` iff key ``j`` is real, ``j <= i`` if ``causal``, and ``i`` is global, or ``j``
    is global, or ``|i - j| <= w * d`` with ``(i - j) % d == 0`` (w = ``attention_window``, d =
    ``attention_dilation``; Beltagy et al. 2020, section 3.1). Padding tokens are never global. Evaluated with
    the kernel's own mask preparation (``_masks``) and ``flex_mask_mod`` on a dense grid.

    Args:
        padding_mask / global_attention_mask: (B, N) bool or None (then ``n`` gives N and B = 1).

    Returns:
        (B, N, N) bool; rows of padding queries are False.

    Raises:
        ValueError: non-positive window / dilation, masks of the wrong shape or dtype (the kernel's checks).
    """
    from ..attention._common import check_positive_int
    from ..attention.local_global import _masks, flex_mask_mod

    w = check_positive_int("attention.attention_window", attention_window)
    d = check_positive_int("attention.attention_dilation", attention_dilation)
    ref = padding_mask if padding_mask is not None else global_attention_mask
    if ref is None:
        if n is None:
            raise ValueError("local_global_pairs needs padding_mask, global_attention_mask or n")
        b, device = 1, torch.device("cpu")
    else:
        b, n, device = ref.shape[0], ref.shape[1], ref.device
    m = _masks(b, n, device, padding_mask, global_attention_mask)
    key_ok = m.real if m.glob is None else m.real & ~m.glob
    mod = flex_mask_mod(key_ok, m.glob, w, d, causal)
    idx = torch.arange(n, device=device)
    out = mod(torch.arange(b, device=device)[:, None, None], 0, idx[None, :, None], idx[None, None, :])
    out = out.expand(b, n, n).clone()
    if m.glob is not None:  # global queries: every real key (earlier ones when causal), computed apart in the kernel
        rows = m.real[:, None, :].expand(b, n, n)
        if causal:
            rows = rows & (idx[None, None, :] <= idx[None, :, None])
        out = torch.where(m.glob[:, :, None], rows, out)
    return out & m.real[:, :, None]


def lsh_pairs(buckets: torch.Tensor, *, bucket_size: int, n: int, padding_mask: torch.Tensor | None = None,
              n_chunks_before: int = 1, n_chunks_after: int = 0, causal: bool = False,
              attend_across_buckets: bool = True) -> torch.Tensor:
    """Pairs of Reformer LSH attention per hash round, from the kernel's sort plan and mask on given buckets.

    In round ``r`` positions are sorted by (bucket, position) and cut into chunks of ``bucket_size``; a query
    attends the keys of its chunk and of ``n_chunks_before`` previous / ``n_chunks_after`` next chunks of the
    same round that pass the masks (real; ``j < i`` if ``causal``; same bucket unless ``attend_across_buckets``),
    never itself unless it has no other target (Kitaev et al. 2020, section 2, "Shared-QK attention").
    Computed with ``longdoc.attention.lsh._make_plan`` / ``_disallowed``, the code of the kernel's forward.

    Args:
        buckets: (B, H, R, N_pad) int64, as returned by ``lsh_attention(..., return_buckets=True)`` or recorded
            by :func:`capture_attention_inputs` (N_pad = N rounded up to a multiple of ``bucket_size``).
        padding_mask: (B, N) bool, True for real tokens, or None.

    Returns:
        (B, H, R, N, N) bool; rows of padding queries are False. Memory O(B H R N^2): meant for pictures.

    Raises:
        ValueError: ``buckets`` not 4-D or its last dim not N rounded up to ``bucket_size``; bad options.
    """
    from ..attention.lsh import _check_chunks, _disallowed, _make_plan

    if buckets.dim() != 4:
        raise ValueError(f"buckets must be (B, H, R, N_pad), got shape {tuple(buckets.shape)}")
    b, h, r, n_pad = buckets.shape
    bs = int(bucket_size)
    if bs <= 0 or n_pad != -(-n // bs) * bs:
        raise ValueError(f"buckets' last dim {n_pad} is not n={n} rounded up to bucket_size={bucket_size}")
    before, after = _check_chunks("n_chunks_before", n_chunks_before), _check_chunks("n_chunks_after", n_chunks_after)
    if padding_mask is not None and bool(padding_mask.all()):
        padding_mask = None  # as the kernel does
    plan = _make_plan(buckets, padding_mask, None, b=b, h=h, n=n, dh=1, bs=bs, before=before, after=after,
                      causal=causal, across=attend_across_buckets, dedup=False, dropout_p=0.0, acc=torch.float32,
                      heads_last=False)
    m_total, kk = plan.m, plan.k
    dev = buckets.device
    buf = torch.empty(m_total, bs, kk * bs, dtype=torch.bool, device=dev)
    tmp = torch.empty_like(buf)
    allowed = ~_disallowed(plan, 0, m_total, buf, tmp).expand(m_total, bs, kk * bs)
    diag = allowed[:, :, before * bs:(before + 1) * bs].diagonal(dim1=1, dim2=2)
    diag.fill_(False)  # never itself ...
    diag.copy_(~allowed.any(dim=-1))  # ... unless it has no other target
    slots = m_total * bs
    pos = plan.posidx % n_pad  # slot -> position (plan.posidx = (head, round) offset + position)
    q_slot = torch.arange(slots, device=dev).view(m_total, bs)
    k_slot = ((torch.arange(m_total, device=dev)[:, None] - before) * bs
              + torch.arange(kk * bs, device=dev)[None, :]).clamp_(0, slots - 1)  # out-of-round slots are masked
    mi, ai, ci = allowed.nonzero(as_tuple=True)
    qs = q_slot[mi, ai]
    out = torch.zeros(b * h * r, n_pad, n_pad, dtype=torch.bool, device=dev)
    out[qs // n_pad, pos[qs], pos[k_slot[mi, ci]]] = True
    out = out.view(b, h, r, n_pad, n_pad)[..., :n, :n]
    real = _real(padding_mask, b, n, dev)
    return out & real[:, None, None, :, None]


# ----------------------------------------------------------------------------------------------
# capturing a real forward pass
# ----------------------------------------------------------------------------------------------


@dataclass
class AttentionCall:
    """The inputs one attention layer received during a forward pass.

    Attributes:
        layer: block index. name: 'full' | 'lsh' | 'local_global' (registry name). module: the attention module.
        hidden: (B, N, D) float, its input (after the block's LayerNorm). padding_mask / global_attention_mask:
        (B, N) bool or None. buckets: LSH only, (B, H, R, N_pad) int64 buckets the layer used.
    """

    layer: int
    name: str
    module: nn.Module
    hidden: torch.Tensor
    padding_mask: torch.Tensor | None
    global_attention_mask: torch.Tensor | None
    buckets: torch.Tensor | None = None


def attention_name(module: nn.Module) -> str:
    """Registry name ('full', 'lsh', 'local_global') of an attention module.

    Raises:
        ValueError: not one of the registered attention classes.
    """
    from ..attention import ATTENTION_REGISTRY

    for name, cls in ATTENTION_REGISTRY.items():
        if type(module) is cls:
            return name
    for name, cls in ATTENTION_REGISTRY.items():
        if isinstance(module, cls):
            return name
    raise ValueError(f"{type(module).__name__} is not a registered attention module ({sorted(ATTENTION_REGISTRY)})")


def capture_attention_inputs(encoder: nn.Module, input_ids: torch.Tensor, padding_mask: torch.Tensor | None = None,
                             global_attention_mask: torch.Tensor | None = None) -> list[AttentionCall]:
    """Run ``encoder`` (a :class:`longdoc.models.Encoder`) once in eval mode without gradients and return what
    every attention layer received, in layer order (LSH: with the buckets it used, recorded through the
    layer's ``bucket_mode``).

    Args:
        input_ids: (B, N) int64. padding_mask / global_attention_mask: (B, N) bool or None.

    Raises:
        ValueError: ``encoder`` has no ``blocks`` with attention modules.
    """
    blocks = getattr(encoder, "blocks", None)
    if not blocks:
        raise ValueError(f"{type(encoder).__name__} has no .blocks: pass a longdoc.models.Encoder")
    calls: list[AttentionCall] = []
    handles = []

    def make_hooks(layer: int, module: nn.Module):
        name = attention_name(module)
        state: dict[str, Any] = {}

        def pre(mod, args, kwargs):
            hidden = args[0] if args else kwargs["hidden"]
            pm = args[1] if len(args) > 1 else kwargs.get("padding_mask")
            gm = args[2] if len(args) > 2 else kwargs.get("global_attention_mask")
            state["call"] = AttentionCall(layer, name, mod, hidden.detach(), pm, gm)
            if name == "lsh":
                state["mode"] = mod.bucket_mode
                if mod.bucket_mode is None:
                    mod.bucket_mode = "record"

        def post(mod, args, kwargs, output):
            call = state.pop("call")
            if name == "lsh":
                mode = state.pop("mode")
                if mode is None:
                    call.buckets = mod._saved_buckets.pop()
                    mod.bucket_mode = None
                elif mode == "record":
                    call.buckets = mod._saved_buckets[-1]
            calls.append(call)

        return pre, post

    for i, block in enumerate(blocks):
        pre, post = make_hooks(i, block.attention)
        handles.append(block.attention.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(block.attention.register_forward_hook(post, with_kwargs=True))
    was_training = encoder.training
    try:
        encoder.eval()
        with torch.no_grad():
            encoder(input_ids, padding_mask, global_attention_mask)
    finally:
        for hd in handles:
            hd.remove()
        encoder.train(was_training)
    return calls


# ----------------------------------------------------------------------------------------------
# pairs and probabilities of one captured call
# ----------------------------------------------------------------------------------------------


def _settings(call: AttentionCall) -> dict:
    m = call.module
    if call.name == "local_global":
        return {"attention_window": m.attention_window, "attention_dilation": m.attention_dilation, "causal": m.causal}
    if call.name == "lsh":
        return {"bucket_size": m.bucket_size, "n_hashes": m.n_hashes, "n_chunks_before": m.n_chunks_before,
                "n_chunks_after": m.n_chunks_after, "causal": m.causal,
                "attend_across_buckets": m.attend_across_buckets}
    return {"causal": m.causal}


def attended_rounds(call: AttentionCall) -> torch.Tensor:
    """In how many hash rounds each (query, key) pair was attended (LSH), or 0/1 (the others): (B, H, N, N) int64."""
    b, n, _ = call.hidden.shape
    h = call.module.n_heads
    s = _settings(call)
    if call.name == "lsh":
        if call.buckets is None:
            raise ValueError(f"layer {call.layer} (lsh): no recorded buckets")
        per_round = lsh_pairs(call.buckets, bucket_size=s["bucket_size"], n=n, padding_mask=call.padding_mask,
                              n_chunks_before=s["n_chunks_before"], n_chunks_after=s["n_chunks_after"],
                              causal=s["causal"], attend_across_buckets=s["attend_across_buckets"])
        return per_round.sum(dim=2)
    if call.name == "local_global":
        mask = local_global_pairs(call.padding_mask, call.global_attention_mask, n=n,
                                  attention_window=s["attention_window"], attention_dilation=s["attention_dilation"],
                                  causal=s["causal"])
    else:
        mask = full_pairs(_real(call.padding_mask, b, n, call.hidden.device), causal=s["causal"])
    return mask[:, None].expand(b, h, n, n).long()


def attended_pairs(call: AttentionCall) -> torch.Tensor:
    """Which keys each query of the captured layer attends: (B, H, N, N) bool (LSH: in any hash round)."""
    return attended_rounds(call) > 0


def _core(call: AttentionCall) -> tuple[Callable[[torch.Tensor], torch.Tensor], tuple[int, int, int, int]]:
    """The layer's functional core as ``f(v) -> P @ v`` with q / k from the captured input; and (B, H, N, Dh)."""
    import torch.nn.functional as F

    from ..attention import full_attention, local_global_attention, lsh_attention

    m, x = call.module, call.hidden
    b, n, _ = x.shape
    h, dh = m.n_heads, m.head_dim
    pm, gm = call.padding_mask, call.global_attention_mask
    if call.name == "full":
        q, k, _ = m.project(x)
        return (lambda v: full_attention(q, k, v, pm, causal=m.causal, dropout_p=0.0)), (b, h, n, dh)
    if call.name == "lsh":
        qk = m.in_proj(x).view(b, n, 2, h, dh)[:, :, 0].transpose(1, 2)
        return (lambda v: lsh_attention(
            qk, v, n_hashes=m.n_hashes, bucket_size=m.bucket_size, padding_mask=pm, buckets=call.buckets,
            causal=m.causal, dropout_p=0.0, attend_across_buckets=m.attend_across_buckets,
            allow_duplicate_attention=m.allow_duplicate_attention, n_chunks_before=m.n_chunks_before,
            n_chunks_after=m.n_chunks_after)), (b, h, n, dh)
    q, k, _ = (t.transpose(1, 2) for t in m.in_proj(x).view(b, n, 3, h, dh).unbind(2))
    kg = qg = None
    if m.in_proj_global is not None:
        d_model = m.d_model
        wgt, bias = m.in_proj_global.weight, m.in_proj_global.bias
        qg = F.linear(x, wgt[:d_model], None if bias is None else bias[:d_model]).view(b, n, h, dh).transpose(1, 2)
        kg = F.linear(x, wgt[d_model:2 * d_model], None if bias is None else bias[d_model:2 * d_model])
        kg = kg.view(b, n, h, dh).transpose(1, 2)

    def f(v):
        return local_global_attention(q, k, v, attention_window=m.attention_window, global_attention_mask=gm,
                                      padding_mask=pm, dropout_p=0.0, causal=m.causal,
                                      attention_dilation=m.attention_dilation,
                                      global_qkv=None if qg is None else (qg, kg, v), backend=m.backend)
    return f, (b, h, n, dh)


def attention_probabilities(call: AttentionCall) -> torch.Tensor:
    """The captured layer's attention probabilities ``P`` (B, H, N, N) float32, rows = queries.

    Measured with the layer's own functional core: its output is ``P @ V``, so values ``V[..., j, c] = 1`` for
    ``j = j0 + c`` read columns ``j0 .. j0 + Dh - 1``; ``ceil(N / Dh)`` calls (LSH: the recorded buckets are
    replayed, so every call sees the same hashing). Rows of padding queries are zero.
    """
    f, (b, h, n, dh) = _core(call)
    dtype = call.hidden.dtype if call.hidden.dtype in (torch.float32, torch.float64) else torch.float32
    probs = torch.zeros(b, h, n, n, dtype=torch.float32, device=call.hidden.device)
    with torch.no_grad():
        for j0 in range(0, n, dh):
            w = min(dh, n - j0)
            v = torch.zeros(b, h, n, dh, dtype=dtype, device=call.hidden.device)
            v[:, :, torch.arange(j0, j0 + w), torch.arange(w)] = 1.0
            probs[..., j0:j0 + w] = f(v)[..., :w].float()
    real = _real(call.padding_mask, b, n, call.hidden.device)
    return probs * real[:, None, :, None]


@dataclass
class LayerPattern:
    """The attention pattern of one layer for one input.

    Attributes:
        layer: block index. name: 'full' | 'lsh' | 'local_global'. settings: the attention's pattern settings.
        pairs: (B, H, N, N) bool, query (row) attends key (column). rounds: (B, H, N, N) int64, number of hash
        rounds in which the pair was attended (LSH) or 0/1. probs: (B, H, N, N) float32 or None.
        padding_mask / global_attention_mask: (B, N) bool (all True / all False when not given).
    """

    layer: int
    name: str
    settings: dict
    pairs: torch.Tensor
    rounds: torch.Tensor
    probs: torch.Tensor | None
    padding_mask: torch.Tensor
    global_attention_mask: torch.Tensor
    extra: dict = field(default_factory=dict)


def attention_pattern(encoder: nn.Module, input_ids: torch.Tensor, padding_mask: torch.Tensor | None = None,
                      global_attention_mask: torch.Tensor | None = None, *, layers: Sequence[int] | None = None,
                      probabilities: bool = True) -> list[LayerPattern]:
    """Attended pairs (and probabilities) of every layer (or of ``layers``) of ``encoder`` on one batch.

    Args:
        encoder: a :class:`longdoc.models.Encoder` (use :func:`longdoc.evaluation._common.find_encoder` on a
            LightningModule). input_ids: (B, N) int64; padding_mask / global_attention_mask: (B, N) bool or None.
        layers: block indices to keep (default all). probabilities: also measure ``P`` (``ceil(N / Dh)`` extra
            kernel calls per layer).

    Returns:
        one :class:`LayerPattern` per selected layer, in layer order.

    Raises:
        IndexError: a layer index outside ``[0, depth)``.
    """
    depth = len(encoder.blocks)
    sel = list(range(depth)) if layers is None else [int(i) for i in layers]
    bad = [i for i in sel if not 0 <= i < depth]
    if bad:
        raise IndexError(f"pattern.layer={bad} out of range: the model has {depth} layer(s) (0..{depth - 1})")
    calls = [c for c in capture_attention_inputs(encoder, input_ids, padding_mask, global_attention_mask)
             if c.layer in sel]
    b, n = input_ids.shape
    real = _real(padding_mask, b, n, input_ids.device)
    glob = (global_attention_mask if global_attention_mask is not None
            else torch.zeros(b, n, dtype=torch.bool, device=input_ids.device))
    out = []
    for c in calls:
        rounds = attended_rounds(c)
        out.append(LayerPattern(c.layer, c.name, _settings(c), rounds > 0, rounds,
                                attention_probabilities(c) if probabilities else None, real, glob & real))
    return out


# ----------------------------------------------------------------------------------------------
# the picture
# ----------------------------------------------------------------------------------------------


def _describe(p: LayerPattern) -> str:
    s = p.settings
    if p.name == "local_global":
        return f"local_global (w={s['attention_window']}" + (f", d={s['attention_dilation']}" if s["attention_dilation"] > 1 else "") + ")"
    if p.name == "lsh":
        return f"lsh (bucket {s['bucket_size']}, {s['n_hashes']} rounds, chunks -{s['n_chunks_before']}/+{s['n_chunks_after']})"
    return "full"


def plot_attention_patterns(patterns: Sequence[LayerPattern], path: str | os.PathLike, *, batch_index: int = 0,
                            head: int | None = 0, show: str = "both", title: str = "") -> bool:
    """Save ``attention_pattern.png``: one column per pattern; top row the attended pairs (LSH coloured by the
    number of hash rounds), bottom row the probabilities (log scale) when ``show='both'`` (``'pairs'`` /
    ``'probs'`` draw one row). Padding rows / columns are shaded grey, global tokens marked on the axes.
    ``head=None`` draws the union (pairs) / mean (probabilities) over heads.

    Returns False when matplotlib is missing (nothing written).

    Raises:
        ValueError: ``show`` not 'both', 'pairs' or 'probs'; no patterns. IndexError: ``head`` / ``batch_index``
            out of range.
    """
    if show not in ("both", "pairs", "probs"):
        raise ValueError(f"pattern.show must be 'both', 'pairs' or 'probs', got {show!r}")
    if not patterns:
        raise ValueError("no attention patterns to draw")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm
    except ImportError:
        log.warning("matplotlib not installed: no attention_pattern.png")
        return False
    rows = ["pairs", "probs"] if show == "both" else [show]
    if "probs" in rows and any(p.probs is None for p in patterns):
        rows = [r for r in rows if r != "probs"] or ["pairs"]
    ncol = len(patterns)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(4.3 * ncol + 0.6, 4.3 * len(rows) + 0.4), squeeze=False)
    for c, p in enumerate(patterns):
        bsz, h = p.pairs.shape[:2]
        if not 0 <= batch_index < bsz:
            raise IndexError(f"batch_index {batch_index} out of range (batch of {bsz})")
        if head is not None and not 0 <= head < h:
            raise IndexError(f"pattern.head={head} out of range: layer {p.layer} has {h} heads (0..{h - 1})")
        sel = (lambda t: t[batch_index, head]) if head is not None else None
        pairs = sel(p.pairs) if sel else p.pairs[batch_index].any(0)
        rounds = sel(p.rounds) if sel else p.rounds[batch_index].amax(0)
        real = p.padding_mask[batch_index].cpu()
        glob = p.global_attention_mask[batch_index].cpu()
        n = pairs.shape[-1]
        n_real = int(real.sum())
        density = float(pairs.sum()) / max(1, n_real * n_real)
        for r, kind in enumerate(rows):
            ax = axes[r][c]
            if kind == "pairs":
                if p.name == "lsh":
                    r_max = max(1, int(p.settings["n_hashes"]))
                    cmap = ListedColormap(["white"] + [plt.get_cmap("viridis")(x) for x in
                                                       torch.linspace(0.15, 0.9, r_max).tolist()])
                    im = ax.imshow(rounds.cpu().numpy(), cmap=cmap, norm=BoundaryNorm(
                        [x - 0.5 for x in range(r_max + 2)], cmap.N), interpolation="nearest")
                    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, ticks=list(range(r_max + 1)))
                    cb.set_label("hash rounds attended", fontsize=7)
                else:
                    ax.imshow(pairs.cpu().numpy(), cmap=ListedColormap(["white", "tab:blue"]), vmin=0, vmax=1,
                              interpolation="nearest")
                sub = f"attended pairs: {int(pairs.sum())} ({100 * density:.1f}% of real N^2)"
            else:
                probs = (sel(p.probs) if sel else p.probs[batch_index].mean(0)).cpu().clamp(min=0)
                vals = probs[probs > 0]
                vmin = max(float(vals.min()) if vals.numel() else 1e-6, 1e-6)
                masked = probs.masked_fill(probs <= 0, float("nan")).numpy()
                cmap = plt.get_cmap("magma_r").with_extremes(bad="white")
                im = ax.imshow(masked, cmap=cmap, norm=LogNorm(vmin=vmin, vmax=1.0), interpolation="nearest")
                cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
                cb.set_label("probability", fontsize=7)
                sub = "attention probabilities (log scale)"
            pad_idx = (~real).nonzero().flatten()
            if pad_idx.numel():  # shade padding rows and columns
                p0 = int(pad_idx.min())
                ax.axhspan(p0 - 0.5, n - 0.5, color="0.6", alpha=0.35, lw=0)
                ax.axvspan(p0 - 0.5, n - 0.5, color="0.6", alpha=0.35, lw=0)
            g_idx = glob.nonzero().flatten().tolist()
            if g_idx:
                ax.plot(g_idx, [-0.5 - 0.01 * n] * len(g_idx), "v", color="tab:red", ms=4, clip_on=False)
            ax.set_xlim(-0.5, n - 0.5)
            ax.set_ylim(n - 0.5, -0.5)
            ax.set_xlabel("key position", fontsize=8)
            ax.set_ylabel("query position", fontsize=8)
            ax.tick_params(labelsize=7)
            head_txt = f"head {head}" if head is not None else "all heads"
            ax.set_title(f"layer {p.layer}: {_describe(p)}\n{head_txt}; {sub}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------------------------
# evaluate.py mode=attention_pattern
# ----------------------------------------------------------------------------------------------


def synthetic_input(length: int, *, vocab_size: int = 32, padding: int = 0, seed: int = 0, cls: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One random sequence: ``(input_ids (1, N) int64, padding_mask (1, N) bool, global_attention_mask (1, N) bool)``;
    token 0 is ``<cls>`` (id 1, global) when ``cls``, the last ``padding`` positions are padding (id 0).

    Raises:
        ValueError: ``length`` < 2, ``padding`` outside ``[0, length - 1)``, ``vocab_size`` < 3.
    """
    if length < 2:
        raise ValueError(f"pattern.length must be >= 2, got {length}")
    if not 0 <= padding < length - 1:
        raise ValueError(f"pattern.padding must be in [0, pattern.length - 1) = [0, {length - 1}), got {padding}")
    if vocab_size < 3:
        raise ValueError(f"pattern.vocab_size must be >= 3, got {vocab_size}")
    gen = torch.Generator().manual_seed(int(seed))
    ids = torch.randint(2, vocab_size, (1, length), generator=gen)
    real = torch.ones(1, length, dtype=torch.bool)
    if padding:
        ids[:, length - padding:] = 0
        real[:, length - padding:] = False
    glob = torch.zeros(1, length, dtype=torch.bool)
    if cls:
        ids[:, 0] = 1
        glob[:, 0] = True
    return ids, real, glob


def _checkpoint_patterns(cfg, pcfg: Mapping) -> tuple[list[LayerPattern], str]:
    from ..evaluate import load_module_and_data
    from ._common import find_encoder

    split = pcfg.get("split", "test")
    if split not in ("train", "val", "test"):
        raise ValueError(f"pattern.split must be 'train', 'val' or 'test', got {split!r}")
    module, dm = load_module_and_data(cfg)
    dm.setup("test")
    ds = dm.datasets[split]
    idx = int(pcfg.get("sample_index", 0))
    if not 0 <= idx < len(ds):
        raise IndexError(f"pattern.sample_index={idx} out of range: the {split} split has {len(ds)} samples")
    batch = dm._collator()([ds[idx]])
    encoder = find_encoder(module)
    torch.manual_seed(int(pcfg.get("seed", 0)))  # LSH layers without a fixed seed draw their rotations from it
    layer = pcfg.get("layer")
    pats = attention_pattern(encoder, batch["input_ids"], batch.get("padding_mask"), batch.get("global_attention_mask"),
                             layers=None if layer is None else [layer], probabilities=pcfg.get("show", "both") != "pairs")
    n_real = int(batch["padding_mask"].sum()) if "padding_mask" in batch else batch["input_ids"].shape[1]
    title = (f"{Path(cfg.ckpt_path).name}: {split} sample {idx} ({n_real} tokens, "
             f"{type(dm).__name__}){'' if layer is not None else ', every layer'}")
    return pats, title


def _synthetic_patterns(pcfg: Mapping) -> tuple[list[LayerPattern], str]:
    from ..models import Encoder
    from ._common import encoder_kwargs, train_model_config

    names = pcfg.get("attentions") or []
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ValueError("mode=attention_pattern without ckpt_path needs pattern.attentions=[local_global,lsh,full] "
                         "(or ckpt_path=<checkpoint>)")
    length = int(pcfg.get("length", 256))
    ids, real, glob = synthetic_input(length, vocab_size=int(pcfg.get("vocab_size", 32)),
                                      padding=int(pcfg.get("padding", 0)), seed=int(pcfg.get("seed", 0)))
    layer = int(pcfg.get("layer") or 0)
    pats = []
    for name in names:
        model_cfg = train_model_config(str(name), list(pcfg.get("model_overrides") or []))
        torch.manual_seed(int(pcfg.get("seed", 0)))
        enc = Encoder(**encoder_kwargs(model_cfg, vocab_size=int(pcfg.get("vocab_size", 32)), max_seq_len=length))
        pats += attention_pattern(enc, ids, real, glob, layers=[layer], probabilities=pcfg.get("show", "both") != "pairs")
    title = (f"Synthetic input: N={length} ({int(real.sum())} real tokens + {length - int(real.sum())} padding, "
             f"token 0 global), untrained models of conf/model/encoder.yaml, seed {int(pcfg.get('seed', 0))}")
    return pats, title


def attention_pattern_mode(cfg) -> dict[str, Any]:
    """``evaluate.py mode=attention_pattern``: with ``ckpt_path``, one input (``pattern.split``,
    ``pattern.sample_index``) of the checkpoint's data through its model, layer ``pattern.layer`` (null: every
    layer); without, a synthetic input of ``pattern.length`` tokens through an untrained encoder per attention
    of ``pattern.attentions``. Writes ``attention_pattern.png`` into ``cfg.paths.output_dir``.

    Returns ``{"patterns": [LayerPattern, ...], "files": {"png": path}}``.

    Raises:
        ValueError / IndexError: bad ``pattern.*`` values (key named). FileNotFoundError: missing checkpoint.
    """
    from omegaconf import OmegaConf

    pcfg = OmegaConf.to_container(cfg.pattern, resolve=True) if cfg.get("pattern") is not None else {}
    if cfg.get("ckpt_path"):
        pats, title = _checkpoint_patterns(cfg, pcfg)
    else:
        pats, title = _synthetic_patterns(pcfg)
    head = pcfg.get("head", 0)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"png": out / "attention_pattern.png"}
    if not plot_attention_patterns(pats, files["png"], head=None if head is None else int(head),
                                   show=pcfg.get("show", "both"), title=title):
        files.pop("png")
    for p in pats:
        n_real = int(p.padding_mask[0].sum())
        pairs = p.pairs[0].any(0) if head is None else p.pairs[0, int(head)]
        log.info("attention_pattern layer %d %s, %s: %d attended pairs (%.1f%% of %d^2 real)", p.layer, _describe(p),
                 "all heads" if head is None else f"head {head}", int(pairs.sum()),
                 100.0 * float(pairs.sum()) / max(1, n_real ** 2), n_real)
    log.info("attention_pattern: wrote %s", ", ".join(str(f) for f in files.values()))
    return {"patterns": pats, "files": files}
