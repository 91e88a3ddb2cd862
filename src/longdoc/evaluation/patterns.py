"""``evaluate.py mode=attention_pattern``: which keys each query attends, read from the kernels themselves.

For one input, every attention layer's inputs are captured with forward hooks during a real forward pass of
the encoder (for LSH also the hash buckets the layer actually used, kept by the layer with
``keep_buckets``). Each layer then reports, through its public introspection methods
(:mod:`longdoc.attention`):

* the **attended pairs** (B, H, N, N) bool -- query ``i`` (row) attends key ``j`` (column) --
  ``module.attended_pairs(...)``, from the rule the kernel masks with: ``local_global`` (Beltagy et al. 2020,
  section 3.1) the dilated window, global keys and global queries; ``lsh`` (Kitaev et al. 2020, section 2)
  per hash round the chunks of the sorted buckets (``rounds``: in how many rounds each pair was attended);
  ``full`` every real key. Rows of padding queries are all False (their outputs are never used).
* the **attention probabilities** (B, H, N, N) float32 -- the row-stochastic matrix ``P`` of the layer (for LSH
  the rounds combined as in the kernel, eq. (6)-(7)) -- ``module.attention_probabilities(...)``, measured by
  running the layer's kernel with one-hot values.

This module captures and draws: ``attention_pattern.png`` (one panel per attention type, or per layer of a
checkpoint; top row the attended pairs, bottom row the probabilities on a log scale).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger("longdoc")


def _real(padding_mask: torch.Tensor | None, b: int, n: int, device) -> torch.Tensor:
    return padding_mask if padding_mask is not None else torch.ones(b, n, dtype=torch.bool, device=device)


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


def capture_attention_inputs(encoder: nn.Module, input_ids: torch.Tensor, padding_mask: torch.Tensor | None = None,
                             global_attention_mask: torch.Tensor | None = None) -> list[AttentionCall]:
    """Run ``encoder`` (a :class:`longdoc.models.Encoder`) once in eval mode without gradients and return what
    every attention layer received, in layer order (LSH: with the buckets it used, kept through the layer's
    ``keep_buckets`` / ``last_buckets``; both are restored afterwards).

    Args:
        input_ids: (B, N) int64. padding_mask / global_attention_mask: (B, N) bool or None.

    Raises:
        ValueError: ``encoder`` has no ``blocks``, or a block's attention is not a registered attention module.
    """
    from ..attention import LSHAttention, attention_name

    blocks = getattr(encoder, "blocks", None)
    if not blocks:
        raise ValueError(f"{type(encoder).__name__} has no .blocks: pass a longdoc.models.Encoder")
    calls: list[AttentionCall] = []
    handles = []

    def make_hooks(layer: int, name: str):
        def pre(mod, args, kwargs):
            hidden = args[0] if args else kwargs["hidden"]
            pm = args[1] if len(args) > 1 else kwargs.get("padding_mask")
            gm = args[2] if len(args) > 2 else kwargs.get("global_attention_mask")
            calls.append(AttentionCall(layer, name, mod, hidden.detach(), pm, gm))

        def post(mod, args, kwargs, output):
            if isinstance(mod, LSHAttention):
                calls[-1].buckets = mod.last_buckets

        return pre, post

    lsh = {}
    for i, block in enumerate(blocks):
        attn = block.attention
        pre, post = make_hooks(i, attention_name(attn))
        handles.append(attn.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(attn.register_forward_hook(post, with_kwargs=True))
        if isinstance(attn, LSHAttention):
            lsh[attn] = (attn.keep_buckets, attn.last_buckets)
            attn.keep_buckets = True
    was_training = encoder.training
    try:
        encoder.eval()
        with torch.no_grad():
            encoder(input_ids, padding_mask, global_attention_mask)
    finally:
        for hd in handles:
            hd.remove()
        for attn, (keep, last) in lsh.items():
            attn.keep_buckets, attn.last_buckets = keep, last
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


def _kernel_inputs(call: AttentionCall) -> dict:
    return {"buckets": call.buckets} if call.name == "lsh" else {}


def attended_rounds(call: AttentionCall) -> torch.Tensor:
    """In how many hash rounds each (query, key) pair was attended (LSH), or 0/1 (the others): (B, H, N, N) int64.

    Raises:
        ValueError: an LSH call without recorded buckets.
    """
    if call.name == "lsh" and call.buckets is None:
        raise ValueError(f"layer {call.layer} (lsh): no recorded buckets")
    n = call.hidden.shape[1]
    if call.name == "lsh":
        return call.module.attended_pairs(call.padding_mask, call.global_attention_mask, seq_len=n,
                                          buckets=call.buckets, per_round=True).sum(dim=2)
    return call.module.attended_pairs(call.padding_mask, call.global_attention_mask, seq_len=n).long()


def attended_pairs(call: AttentionCall) -> torch.Tensor:
    """Which keys each query of the captured layer attends: (B, H, N, N) bool (LSH: in any hash round)."""
    return call.module.attended_pairs(call.padding_mask, call.global_attention_mask, seq_len=call.hidden.shape[1],
                                      **_kernel_inputs(call))


def attention_probabilities(call: AttentionCall) -> torch.Tensor:
    """The captured layer's attention probabilities ``P`` (B, H, N, N) float32, rows = queries, measured through
    its kernel (``module.attention_probabilities``; LSH: the recorded buckets are replayed, so every kernel call
    sees the same hashing). Rows of padding queries are zero."""
    return call.module.attention_probabilities(call.hidden, call.padding_mask, call.global_attention_mask,
                                               **_kernel_inputs(call))


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
        encoder: a :class:`longdoc.models.Encoder` (use :func:`longdoc.evaluation.train_config.find_encoder` on a
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
    from .checkpoint import load_from_config
    from .train_config import find_encoder

    split = pcfg.get("split", "test")
    if split not in ("train", "val", "test"):
        raise ValueError(f"pattern.split must be 'train', 'val' or 'test', got {split!r}")
    module, dm = load_from_config(cfg)
    dm.setup("test")
    ds = dm.datasets[split]
    idx = int(pcfg.get("sample_index", 0))
    if not 0 <= idx < len(ds):
        raise IndexError(f"pattern.sample_index={idx} out of range: the {split} split has {len(ds)} samples")
    collate = getattr(dm, f"{split}_dataloader")().collate_fn  # the collation the split's loader uses
    batch = collate([ds[idx]])
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
    from .train_config import encoder_kwargs, train_model_config

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
