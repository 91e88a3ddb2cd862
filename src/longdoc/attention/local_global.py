"""Longformer attention: a (dilated, optionally causal) sliding window plus symmetric global attention.

Beltagy, Peters & Cohan 2020, "Longformer: The Long-Document Transformer", section 3.1
("Attention Pattern"): every token attends ``attention_window`` neighbours on each side (sliding
window); with dilation ``d`` it attends every ``d``-th neighbour up to ``attention_window * d`` away
(dilated sliding window); tokens marked global attend to every token and every token attends to them.
Section 3.1 "Linear Projections for Global Attention": global attention may use its own query / key /
value projections. Section 4 (autoregressive language modelling): the causal (left-to-right) variant, ``j <= i``.

Two backends compute the same function:

* ``"blocked"`` (any device, every dtype): the sequence is regrouped into ``d`` interleaved
  subsequences (so the dilated window is an ordinary window of ``w`` on each), cut into query blocks
  of ``c`` tokens, and block ``t`` is scored against the ``2w' + c`` keys around it (``w'`` = ``w``
  rounded up to a multiple of ``c``), plus the G global keys. All subsequences are laid end to end in
  one padded buffer, so the key windows of every block are a zero-copy ``unfold`` that ``bmm`` reads
  in place; the band, padding and global-slot masks of a chunk are one boolean mask (built once per call).
  A custom autograd function works through the blocks in chunks; each chunk's window scores are normalised by
  one fused ``torch._softmax`` and joined with the global-key scores by per-row weights. The probabilities are
  kept for backward while a call's total at most ``_STORE_PROBS_MAX`` elements; above that only per-row
  statistics are kept and backward recomputes them chunk by chunk (flash-style), so nothing of size
  N x window is kept. The window gradients of keys and values are overlap-added with one small in-place
  ``baddbmm_`` per block offset. Global queries attend every real key in an O(G * N) pass inside the same
  function, and the output is written token-major, so merging the heads afterwards is a view. ``c`` is picked
  by :func:`_block_size` (measured: see its docstring). The masks and geometry of a call are built once per
  mask tensors and shared by every layer of a forward pass and its recomputation (:class:`_CallCache`).
* ``"flex"`` (CUDA): ``torch.nn.attention.flex_attention`` with a ``BlockMask`` built from the same
  rule, compiled once per shape; the BlockMask is cached per (shape, masks). In the installed torch
  (2.13, CPU build) flex_attention has no CPU backward and its eager CPU path materialises the N x N
  scores, so "flex" on CPU raises and "auto" picks "blocked" there.

Time and memory are O(N * (w + G)); no N x N tensor is formed (benchmarks/README.md has the measured time
and memory against HuggingFace's ``LongformerSelfAttention``).

:func:`local_global_pairs` / :meth:`LocalGlobalAttention.attended_pairs` give the attended (query, key) pairs
of the same rule as a dense boolean matrix (for pictures and checks).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._common import MultiHeadProjection, check_mask, check_positive_int, check_qkv, neg_inf, softmax_scale, stats_dtype

BACKENDS = ("auto", "blocked", "flex")

# Query-block size target of the blocked kernel (see _block_size) and the score elements one chunk of
# query blocks may hold (16M: 64 MiB of float32 scores; 2 chunks for N=16K, H=4, w=128). Smaller chunks stay
# in cache (2M was 10-30% faster on an idle machine) but multiply the number of parallel kernels; on a
# shared 2-core machine each one waits for a descheduled OpenMP thread. Measured at N=16K under load
# average ~5 (ours / HF median time): 8M chunks 0.54, 16M 0.34, 32M 0.35; peak memory 0.53 of HF's at 16M.
_BLOCK_TARGET = 32
_CHUNK_ELEMS = 1 << 24
# Probability tiles of a call up to this many elements (64 MiB in float32: N = 14K at H = 4, w = 128) are kept for
# backward, which then skips recomputing the scores and their softmax; above it backward recomputes them chunk by
# chunk, so a layer's memory stays O(N * Dh) plus a few tiles.
_STORE_PROBS_MAX = 1 << 24


# ---------------------------------------------------------------------------------------------
# argument checks and masks
# ---------------------------------------------------------------------------------------------

def _check_options(causal, attention_dilation, backend) -> tuple[bool, int, str]:
    if not isinstance(causal, bool):
        raise ValueError(f"attention.causal must be a bool (True for autoregressive models), got {causal!r}")
    d = check_positive_int("attention.attention_dilation", attention_dilation, hint="use 1 for an undilated window")
    if backend not in BACKENDS:
        raise ValueError(f"attention.backend must be one of {list(BACKENDS)}, got {backend!r}")
    return causal, d, backend


def _gather_global(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Global positions of each row, left-aligned: indices (B, G) and slot validity (B, G), G = max count."""
    counts = mask.sum(dim=-1)
    g = int(counts.max()) if mask.numel() else 0
    order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)[:, :g]
    valid = torch.arange(g, device=mask.device)[None, :] < counts[:, None]
    return order, valid


def _gather_heads(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, H, N, Dh), idx (B, G) -> (B, H, G, Dh)."""
    b, h, _, d = x.shape
    return torch.gather(x, 2, idx[:, None, :, None].expand(b, h, idx.shape[1], d))


@dataclass
class _Masks:
    real: torch.Tensor            # (B, N) bool: real tokens
    glob: torch.Tensor | None     # (B, N) bool: real global tokens, None when there are none
    g_idx: torch.Tensor | None    # (B, G) long: global positions, left-aligned
    g_valid: torch.Tensor | None  # (B, G) bool: slot holds a global token


def _version(t: torch.Tensor | None):
    """``t``'s in-place version counter (None for None; raises RuntimeError for inference-mode tensors)."""
    return None if t is None else t._version


class _CallCache:
    """A small LRU of objects derived from the mask tensors of a call (:class:`_Masks`, :class:`_Band`), so that the
    layers of one forward pass -- and the recomputation of reversible / checkpointed layers in backward -- build
    them once. An entry is found by its key and the identity and in-place version of the mask tensors it was
    built from; it holds references to those tensors, so their ids are not reused while it lives. Tensors without
    a version counter (inference mode) are never cached."""

    def __init__(self, size: int = 8):
        self.size, self.entries = size, OrderedDict()

    def get(self, key, tensors, build):
        try:
            versions = tuple(_version(t) for t in tensors)
        except RuntimeError:  # inference tensors track no version: nothing to key on
            return build()
        full = (key, tuple(id(t) for t in tensors))
        hit = self.entries.get(full)
        if hit is not None and hit[1] == versions and all(a is b for a, b in zip(hit[0], tensors)):
            self.entries.move_to_end(full)
            return hit[2]
        value = build()
        self.entries[full] = (tuple(tensors), versions, value)
        self.entries.move_to_end(full)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return value


_MASK_CACHE = _CallCache(8)
_BAND_CACHE = _CallCache(4)


def _masks(b: int, n: int, device, padding_mask, global_attention_mask) -> _Masks:
    """The checked masks of a call, built once per (padding_mask, global_attention_mask) tensors (:class:`_CallCache`)."""
    return _MASK_CACHE.get((b, n, str(device)), (padding_mask, global_attention_mask),
                           lambda: _build_masks(b, n, device, padding_mask, global_attention_mask))


def _build_masks(b: int, n: int, device, padding_mask, global_attention_mask) -> _Masks:
    padding_mask = check_mask("padding_mask", padding_mask, b, n)
    global_attention_mask = check_mask("global_attention_mask", global_attention_mask, b, n)
    real = padding_mask if padding_mask is not None else torch.ones(b, n, dtype=torch.bool, device=device)
    if global_attention_mask is None:
        return _Masks(real, None, None, None)
    glob = global_attention_mask & real  # padding tokens are never global
    if not bool(glob.any()):
        return _Masks(real, None, None, None)
    g_idx, g_valid = _gather_global(glob)
    return _Masks(real, glob, g_idx, g_valid)


# ---------------------------------------------------------------------------------------------
# blocked backend: a flash-style banded kernel on a flat, padded layout
# ---------------------------------------------------------------------------------------------

def _block_size(w: int) -> tuple[int, int]:
    """Query-block size ``c`` and padded one-sided window ``w'`` (a multiple of ``c``, ``w <= w' < w + w/c``).

    A block of ``c`` queries is scored against the ``2w' + c`` keys around it, of which each query
    needs ``2w + 1``: the wasted work falls as ``c`` shrinks while small matmuls run less efficiently.
    Measured (2 CPU threads, N=16K, H=4, Dh=64, w=128, forward+backward of the kernel, best of 12):
    c=16 270 ms, c=32 267 ms, c=64 291 ms, c=128 363 ms (3w keys per block, the previous kernel's
    shape). So the target is 32 tokens (288 keys per block, 11% of them outside the band); windows
    smaller than the target use ``c = w``.
    """
    n_sub = max(1, round(w / _BLOCK_TARGET))
    c = -(-w // n_sub)
    return c, c * n_sub


def _grouped(mask: torch.Tensor, d: int, n_grp: int, lq: int) -> torch.Tensor:
    """(B, N) bool -> (B, S = d, lq): subsequence s holds positions s, s + d, ...; False past the end."""
    b, n = mask.shape
    g = F.pad(mask, (0, n_grp * d - n), value=False).view(b, n_grp, d).transpose(1, 2)
    return F.pad(g, (0, lq - n_grp), value=False)


_ROW_MAPS: OrderedDict = OrderedDict()


def _row_maps(b: int, h: int, n: int, d: int, n_grp: int, lq: int, dev) -> tuple[torch.Tensor, ...]:
    """Maps of flat row (z = (b, h, s), m) to token-major rows (b, m d + s, h): into a (B, N', H) output
    (padding rows -> a dump row), into a (B, N, H) gradient, and which rows are real. Cached per shape."""
    key = (b, h, n, d, n_grp, lq, str(dev))
    if key not in _ROW_MAPS:
        n_pad = n_grp * d
        i = torch.arange(b * h * d * lq, device=dev)
        zz, mm = i // lq, i % lq
        bb, hh, ss = zz // (h * d), (zz // d) % h, zz % d
        tok = mm * d + ss
        out_map = torch.where(mm < n_grp, (bb * n_pad + tok) * h + hh, b * n_pad * h)
        in_ok = (mm < n_grp) & (tok < n)
        _ROW_MAPS[key] = (out_map, in_ok, torch.where(in_ok, (bb * n + tok) * h + hh, 0))
        while len(_ROW_MAPS) > 8:
            _ROW_MAPS.popitem(last=False)
    _ROW_MAPS.move_to_end(key)
    return _ROW_MAPS[key]


@dataclass
class _Band:
    """Geometry, masks and index maps of one banded call, shared by forward and backward.

    Layout: the (B, H, S = d) subsequences (positions s, s + d, ... of one head; length L = ceil(N / d)) are
    each padded to ``lq = nb * c`` rows and laid end to end, with ``wp`` zero rows before and after: a flat
    (P, Dh) tensor, ``P = 2 wp + Z lq``, ``Z = B H S``. Flat query block ``T`` holds rows ``wp + T c ...``
    and its key window is rows ``T c ... T c + K`` (``K = 2 wp + c``): a zero-copy unfold of the flat keys.
    Keys of a neighbouring subsequence inside a window are masked (``win_bad``). Outputs go to a token-major
    (B, N', H, Dh) buffer (``out_map``), gradients are read from a (B, N, H, Dh) one (``in_map``).
    """
    shape: tuple                     # (B, H, N, Dh)
    w: int                           # one-sided window in subsequence steps
    wp: int                          # w rounded up to a multiple of c
    c: int                           # query-block size
    d: int                           # dilation = number of subsequences S
    scale: float
    causal: bool
    real: torch.Tensor               # (B, N) bool
    glob: torch.Tensor | None        # (B, N) bool, real global tokens
    g_idx: torch.Tensor | None       # (B, G) long, global positions (left-aligned)
    g_valid: torch.Tensor | None     # (B, G) bool
    chunk_elems: int

    def __post_init__(self):
        b, h, n, _ = self.shape
        c, wp, d, dev = self.c, self.wp, self.d, self.real.device
        self.n_grp = -(-n // d)
        self.nb = max(1, -(-self.n_grp // c))
        nb = self.nb
        self.z, self.lq, self.k_len = b * h * d, nb * c, 2 * wp + c
        self.rows = 2 * wp + self.z * self.lq
        self.n_glob = 0 if self.g_idx is None else self.g_idx.shape[1]
        interior = slice(wp, wp + self.z * self.lq)
        # window masks
        key_ok = self.real if self.glob is None else self.real & ~self.glob  # global keys have their own slot
        kb = torch.ones(self.rows, dtype=torch.bool, device=dev)
        kb[interior].view(b, h, d, self.lq).copy_(~_grouped(key_ok, d, self.n_grp, self.lq)[:, None])
        off_blk = torch.arange(nb, device=dev)[:, None] * c - wp + torch.arange(self.k_len, device=dev)[None, :]
        cross = (off_blk < 0) | (off_blk >= self.lq)  # (nb, K): key of a neighbouring subsequence
        self.win_bad = kb.unfold(0, self.k_len, c) | cross.repeat(self.z, 1)  # (Z nb, K)
        off = torch.arange(self.k_len, device=dev)[None, :] - wp - torch.arange(c, device=dev)[:, None]
        self.band_ok = off.abs() <= self.w  # (c, K); key minus query, in subsequence steps
        if self.causal:
            self.band_ok &= off <= 0
        # chunks: whole subsequences when they are short, else runs of blocks inside one subsequence
        per_block = c * (self.k_len + self.n_glob)
        total = self.z * nb
        if nb * per_block <= self.chunk_elems:  # as few chunks as the budget allows, balanced
            n_chunks = -(-self.z // (self.chunk_elems // (nb * per_block)))
            step = -(-self.z // n_chunks) * nb
            self.chunks = [(t0, min(total, t0 + step)) for t0 in range(0, total, step)]
        else:
            tc = -(-nb // -(-nb * per_block // self.chunk_elems))
            self.chunks = [(zz * nb + t0, zz * nb + min(nb, t0 + tc))
                           for zz in range(self.z) for t0 in range(0, nb, tc)]
        any_bad = self.win_bad.any(-1)
        self._window_bad: dict[int, torch.Tensor] = {}
        self.chunk_bad = ([bool(any_bad[t0:t1].any()) for t0, t1 in self.chunks] if dev.type == "cpu"
                          else [True] * len(self.chunks))
        n_pad = self.n_grp * d
        self.out_len = b * n_pad * h
        self.out_map, self.in_ok, self.in_map = _row_maps(b, h, n, d, self.n_grp, self.lq, dev)
        if self.g_idx is None:
            return
        z_idx = torch.arange(self.z, device=dev)
        self.b_of_z, self.s_of_z = z_idx // (h * d), z_idx % d
        # flat row of every (b, h, slot): the global token in its subsequence; empty slots -> row 0 (zeros)
        hr = torch.arange(h, device=dev)[None, :, None]
        g = self.g_idx[:, None, :]
        rows = wp + ((torch.arange(b, device=dev)[:, None, None] * h + hr) * d + g % d) * self.lq + g // d
        self.g_rows = torch.where(self.g_valid[:, None, :], rows, 0)  # (B, H, G)
        self.g_b, self.g_slot = self.g_valid.nonzero(as_tuple=True)  # valid slots
        self.g_tok = self.g_idx[self.g_b, self.g_slot]
        self.g_out_rows = ((self.g_b * n_pad + self.g_tok)[:, None] * h + hr[0, :, 0]).reshape(-1)  # (n_valid H,)
        self.g_flat_rows = self.g_rows[self.g_b, :, self.g_slot].reshape(-1)
        # keys of global queries: every real (earlier, if causal) token of the head, (B, 1, G, S lq)
        bad = ~_grouped(self.real, d, self.n_grp, self.lq).reshape(b, 1, 1, -1) | ~self.g_valid[:, None, :, None]
        if self.causal:
            m_ = torch.arange(self.lq, device=dev)
            pos = (m_[None, :] * d + torch.arange(d, device=dev)[:, None]).reshape(-1)
            bad = bad | (pos[None, None, None, :] > self.g_idx[:, None, :, None])
        self.g_query_bad = bad
        self.g_chunk = max(1, self.chunk_elems // (b * h * d * self.lq))

    # -- layout -----------------------------------------------------------------------------------
    def flatten(self, x: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """(B, H, N, Dh) -> flat padded (P, Dh), zero rows around and past each subsequence's end."""
        b, h, n, dh = x.shape
        out = self.empty_rows(dh, x.dtype, x.device)
        seqs = out[self.wp: self.wp + self.z * self.lq].view(b, h, self.d, self.lq, dh)
        dst = seqs[:, :, :, : self.n_grp]
        if self.d == 1:
            src = x[:, :, None]
        else:
            src = F.pad(x, (0, 0, 0, self.n_grp * self.d - n)).view(b, h, self.n_grp, self.d, dh).transpose(2, 3)
        if scale is None:
            dst.copy_(src)
        elif dst.is_contiguous():
            torch.mul(src, scale, out=dst)
        else:
            dst.copy_(src * scale)
        seqs[:, :, :, self.n_grp:].zero_()
        return out

    def empty_rows(self, dh: int, dtype, device) -> torch.Tensor:
        """Uninitialised flat (P, Dh) tensor whose ``wp`` rows at each end are zero."""
        out = torch.empty(self.rows, dh, dtype=dtype, device=device)
        out[: self.wp].zero_()
        out[self.rows - self.wp:].zero_()
        return out

    def unflatten(self, xf: torch.Tensor) -> torch.Tensor:
        """Flat padded (P, Dh) -> (B, H, N, Dh) (a view when d == 1)."""
        b, h, n, dh = self.shape
        x = xf[self.wp: self.wp + self.z * self.lq].view(b, h, self.d, self.lq, dh)[:, :, :, : self.n_grp]
        if self.d == 1:
            return x[:, :, 0]
        return x.transpose(2, 3).reshape(b, h, self.n_grp * self.d, dh)[:, :, :n]

    def heads(self, xf: torch.Tensor) -> torch.Tensor:
        """Flat (P, Dh) -> (B H, S lq, Dh) view: every (padded) position of each head."""
        b, h, _, _ = self.shape
        return xf[self.wp: self.wp + self.z * self.lq].view(b * h, self.d * self.lq, -1)

    def token_major(self, out_rows: torch.Tensor) -> torch.Tensor:
        """Token-major output rows (out_len + 1, Dh) -> (B, H, N, Dh) view of a (B, N', H, Dh) layout."""
        b, h, n, dh = self.shape
        return out_rows[: self.out_len].view(b, self.n_grp * self.d, h, dh)[:, :n].transpose(1, 2)

    # -- masks ------------------------------------------------------------------------------------
    def window_bad(self, i: int) -> torch.Tensor:
        """Bool mask of the window scores chunk ``i`` may not use: (n_t, c, K) where some key of the chunk is bad
        (padding, global slot, neighbouring subsequence), else the (1, c, K) band mask; kept per chunk on CPU."""
        hit = self._window_bad.get(i)
        if hit is None:
            t0, t1 = self.chunks[i]
            band_bad = ~self.band_ok[None]
            hit = band_bad | self.win_bad[t0:t1, None, :] if self.chunk_bad[i] else band_bad
            if self.real.device.type == "cpu":  # (elsewhere every chunk counts as bad: not kept, N * H * K bytes)
                self._window_bad[i] = hit
        return hit

    def global_key_bad(self, t0: int, t1: int) -> torch.Tensor:
        """(n_z, R, G) bool: global keys a chunk's rows (n_z subsequences of R rows) may not use."""
        z0, z1 = self.zrange(t0, t1)
        bz = self.b_of_z[z0:z1]
        bad = ~self.g_valid[bz][:, None, :]
        if self.causal:
            f = torch.arange(t0 * self.c, t1 * self.c, device=bz.device)
            q_pos = (f % self.lq) * self.d + self.s_of_z[f // self.lq]
            bad = bad | (self.g_idx[bz][:, None, :] > q_pos.view(z1 - z0, -1)[:, :, None])
        return bad

    def zrange(self, t0: int, t1: int) -> tuple[int, int]:
        return t0 // self.nb, (t1 - 1) // self.nb + 1


def _dropout_keep(shape, p: float, gen: torch.Generator, device, dtype) -> torch.Tensor:
    """Kept entries scaled by 1 / (1 - p), drawn from ``gen`` (replayed in backward)."""
    keep = torch.rand(shape, generator=gen, device=device, dtype=dtype) >= p
    return keep.to(dtype) * (1.0 / (1.0 - p))


def _acc_bmm_(dst: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """dst += a @ b in place (batched), ``dst`` possibly of a wider dtype than ``a`` and ``b``."""
    if dst.dtype == a.dtype:
        dst.baddbmm_(a, b)
    else:
        dst.add_(torch.bmm(a, b))


def _add_windows(buf_blocks: torch.Tensor, a_t: torch.Tensor, bmat: torch.Tensor, t0: int, t1: int, c: int) -> None:
    """buf_blocks[t + j] += a_t[t, j-th c rows] @ bmat[t] for every window offset j (overlap-add of a window
    gradient, one small in-place matmul per offset; no (n_t, K, Dh) intermediate)."""
    for j in range(a_t.shape[1] // c):
        _acc_bmm_(buf_blocks[t0 + j: t1 + j], a_t[:, j * c: (j + 1) * c], bmat)


def _softmax_stats(s: torch.Tensor, thr: float, extra: torch.Tensor | None = None):
    """In place: s <- exp(s - max) (and ``extra``, scores sharing the rows); returns (lse, 1/l or 0 where the
    row has no usable key (then lse = +inf, so backward's exp(s - lse) is 0))."""
    m = s.amax(-1, keepdim=True)
    if extra is not None:
        m = torch.maximum(m, extra.amax(-1, keepdim=True))
    l_ = s.sub_(m).exp_().sum(-1, keepdim=True)
    if extra is not None:
        l_ = l_ + extra.sub_(m).exp_().sum(-1, keepdim=True)
    valid = m > thr
    return torch.where(valid, m + l_.log(), math.inf), torch.where(valid, 1.0 / l_, 0.0)


def _window_probs(s: torch.Tensor, sg: torch.Tensor | None, thr: float, check_empty: bool):
    """Probabilities of one chunk's rows from its masked window scores ``s`` (n_t, c, K) and global-key scores
    ``sg`` (n_t, c, G) or None, all in the statistics dtype.

    The window part is one fused ``torch._softmax`` over the K window keys (``p``); a row's full distribution over
    window and global keys is ``alpha * p`` and ``pg``, with ``alpha = exp(lse_window - lse)`` and
    ``pg = exp(sg - lse)``, ``lse`` the log-sum-exp over all its keys. No masked window score (``finfo.min``) is
    exponentiated on its own: torch's vectorised exp takes a slow path for such arguments (benchmarks/README.md).

    Returns (p, alpha (n_t, c, 1) or None = all ones, pg or None, lse (n_t, c, 1) or None); rows with no usable key
    get ``alpha = 0``, ``pg = 0`` and ``lse = +inf``. ``check_empty``: a row may have no usable window key (chunks
    with masked keys); without global keys and without it, ``alpha`` and ``lse`` are None.
    """
    p = torch._softmax(s, -1, False)
    if sg is None and not check_empty:
        return p, None, None, None
    m = s.amax(-1, keepdim=True)
    lse_w = m - p.amax(-1, keepdim=True).log()  # the largest probability is exp(m - lse_window)
    has_w = m > thr
    if sg is None:
        if bool(has_w.all()):
            return p, None, None, None
        return p, has_w.to(s.dtype), None, torch.where(has_w, lse_w, math.inf)
    mg = sg.amax(-1, keepdim=True)
    lse_g = mg + (sg - mg).exp().sum(-1, keepdim=True).log()
    has_g = mg > thr
    lse = torch.where(has_w & has_g, torch.logaddexp(lse_w, lse_g), torch.where(has_w, lse_w, lse_g))
    valid = has_w | has_g
    lse = torch.where(valid, lse, math.inf)
    alpha = torch.where(has_w, (lse_w - lse).exp(), 0.0)
    pg = torch.where(has_g, (sg - lse).exp(), 0.0)
    return p, alpha, pg, lse


class _BandedAttention(torch.autograd.Function):
    """Window + global attention, flash-style: probabilities are kept for backward while they are small
    (``_STORE_PROBS_MAX``), otherwise backward recomputes them chunk by chunk from the kept per-row statistics, so
    no N x window tensor is kept.

    Inputs q, k, v (B, H, N, Dh). Global keys and values are read from k, v. ``out_g`` (B, H, G, Dh), when
    given, holds the outputs of the global queries (separate projections, computed outside); otherwise they
    are computed here from q, k, v (every real key). The output is a (B, H, N, Dh) view of a token-major
    (B, N, H, Dh) buffer, so merging heads afterwards is free.
    """

    @staticmethod
    def forward(ctx, q, k, v, out_g, band: _Band, dropout_p: float, seed: int):
        with torch.autocast(q.device.type, enabled=False):
            dt, acc = v.dtype, stats_dtype(v.dtype)
            c, wp, K, dev = band.c, band.wp, band.k_len, q.device
            fill, thr = neg_inf(acc), 0.5 * neg_inf(acc)
            qf = band.flatten(q, scale=band.scale)
            kf, vf = band.flatten(k), band.flatten(v)
            dh = qf.shape[1]
            k_win_t = kf.unfold(0, K, c)                 # (Z nb, Dh, K): K^T of every window, no copy
            v_win = vf.unfold(0, K, c).transpose(1, 2)   # (Z nb, K, Dh)
            out_rows = torch.empty(band.out_len + 1, dh, dtype=dt, device=dev)  # token-major + a dump row
            out_rows[-1].zero_()
            store = any(ctx.needs_input_grad) and band.z * band.nb * c * K <= _STORE_PROBS_MAX
            # per row: the window share of its probability mass and the log-sum-exp (both kept for backward)
            alpha_f = torch.ones(band.rows, dtype=acc, device=dev)
            lse_f = torch.full((band.rows,), math.inf, dtype=acc, device=dev) if band.n_glob else None
            probs, probs_g = [], []
            kg_z = vg_z = lse_g = None
            if band.n_glob:
                kg_z, vg_z = (x[band.g_rows][:, :, None].expand(-1, -1, band.d, -1, -1).reshape(band.z, -1, dh)
                              for x in (kf, vf))
            gen = None
            if dropout_p > 0:
                gen = torch.Generator(device=dev)
                gen.manual_seed(seed)
            for i, (t0, t1) in enumerate(band.chunks):
                n_t, r0, r1 = t1 - t0, wp + t0 * c, wp + t1 * c
                qc = qf[r0:r1].view(n_t, c, dh)
                s = torch.bmm(qc, k_win_t[t0:t1]).to(acc).masked_fill_(band.window_bad(i), fill)
                sg = None
                if kg_z is not None:
                    z0, z1 = band.zrange(t0, t1)
                    sg = torch.bmm(qc.view(z1 - z0, -1, dh), kg_z[z0:z1].transpose(1, 2)).to(acc)
                    sg = sg.masked_fill_(band.global_key_bad(t0, t1), fill).view(n_t, c, -1)
                p, alpha, pg, lse = _window_probs(s, sg, thr, band.chunk_bad[i])
                del s
                if alpha is not None:
                    alpha_f[r0:r1] = alpha.view(-1)
                if lse_f is not None:
                    lse_f[r0:r1] = lse.view(-1)
                if store:
                    probs.append(p)
                    if pg is not None:
                        probs_g.append(pg)
                pd, pgd = p, pg
                if gen is not None:
                    pd = p * _dropout_keep(p.shape, dropout_p, gen, dev, acc)
                    if pg is not None:
                        pgd = pg * _dropout_keep(pg.shape, dropout_p, gen, dev, acc)
                o = torch.bmm(pd.to(dt), v_win[t0:t1])
                if alpha is not None:
                    o = o * alpha.to(dt)
                if pgd is not None:
                    o += torch.bmm(pgd.to(dt).view(z1 - z0, -1, pgd.shape[-1]), vg_z[z0:z1]).view_as(o)
                out_rows.index_copy_(0, band.out_map[t0 * c: t1 * c], o.view(-1, dh))
                del p, pd, pg, pgd
            if band.n_glob and out_g is None:  # global queries attend every real key of their head
                bh, g_all = band.g_rows.shape[0] * band.g_rows.shape[1], band.n_glob
                qg = qf[band.g_rows].view(bh, g_all, dh)
                k_h, v_h = band.heads(kf), band.heads(vf)
                out_g = torch.empty(bh, g_all, dh, dtype=dt, device=dev)
                lse_g = torch.empty(bh, g_all, 1, dtype=acc, device=dev)
                for g0 in range(0, g_all, band.g_chunk):
                    g1 = min(g_all, g0 + band.g_chunk)
                    s = torch.bmm(qg[:, g0:g1], k_h.transpose(1, 2)).to(acc)
                    s.view(band.shape[0], -1, g1 - g0, s.shape[-1]).masked_fill_(band.g_query_bad[:, :, g0:g1], fill)
                    lse, inv = _softmax_stats(s, thr)
                    lse_g[:, g0:g1] = lse
                    if gen is not None:
                        s.mul_(_dropout_keep(s.shape, dropout_p, gen, dev, acc))
                    out_g[:, g0:g1] = torch.bmm(s.to(dt), v_h) * inv
                out_g = out_g.view(band.shape[0], -1, g_all, dh)
            if out_g is not None:  # the rows of global queries
                out_rows.index_copy_(0, band.g_out_rows, out_g[band.g_b, :, band.g_slot].reshape(-1, dh).to(dt))
        ctx.n_probs = (len(probs), len(probs_g))
        ctx.save_for_backward(qf, kf, vf, out_rows, alpha_f, lse_f, lse_g, *probs, *probs_g)
        ctx.band, ctx.dropout_p, ctx.seed = band, dropout_p, seed
        return band.token_major(out_rows)

    @staticmethod
    def backward(ctx, dout):
        qf, kf, vf, out_rows, alpha_f, lse_f, lse_g, *saved = ctx.saved_tensors
        probs, probs_g = saved[:ctx.n_probs[0]], saved[ctx.n_probs[0]:]
        band, p_drop = ctx.band, ctx.dropout_p
        with torch.autocast(qf.device.type, enabled=False):
            dt, acc = vf.dtype, stats_dtype(vf.dtype)
            c, wp, K, dev = band.c, band.wp, band.k_len, qf.device
            b, h, _, _ = band.shape
            fill, thr = neg_inf(acc), 0.5 * neg_inf(acc)
            dh = qf.shape[1]
            # dO rows are gathered per chunk from the token-major gradient; padding rows and rows of global
            # queries (their output is not the local one) get zero
            dout_tm = dout.transpose(1, 2).to(dt).contiguous()  # (B, N, H, Dh); a view when it came from a merge
            dout_rows = dout_tm.view(-1, dh)
            row_keep = band.in_ok.to(acc)
            dout_g = do_g = None
            if band.n_glob:
                row_keep[band.g_flat_rows - wp] = 0
                do_g = torch.zeros(b, h, band.n_glob, dh, dtype=dt, device=dev)
                do_g[band.g_b, :, band.g_slot] = dout_tm[band.g_b, band.g_tok]
                if lse_g is None:  # out_g came from outside: its gradient goes back there
                    dout_g = do_g
            k_win_t = kf.unfold(0, K, c)
            k_win = k_win_t.transpose(1, 2)
            v_win_t = vf.unfold(0, K, c)
            dq_f = band.empty_rows(dh, acc, dev)
            dk_f = torch.zeros(band.rows, dh, dtype=acc, device=dev)
            dv_f = torch.zeros(band.rows, dh, dtype=acc, device=dev)
            dk_blocks, dv_blocks = dk_f.view(-1, c, dh), dv_f.view(-1, c, dh)
            kg_z = vg_z = dkg_z = dvg_z = None
            if band.n_glob:
                kg_z, vg_z = (x[band.g_rows][:, :, None].expand(-1, -1, band.d, -1, -1).reshape(band.z, -1, dh)
                              for x in (kf, vf))
                dkg_z = torch.zeros(kg_z.shape, dtype=acc, device=dev)
                dvg_z = torch.zeros(vg_z.shape, dtype=acc, device=dev)
            gen = None
            if p_drop > 0:
                gen = torch.Generator(device=dev)
                gen.manual_seed(ctx.seed)
            scaled = band.n_glob or not bool((alpha_f == 1).all())  # some row's window share is not 1
            for i, (t0, t1) in enumerate(band.chunks):
                n_t, r0, r1 = t1 - t0, wp + t0 * c, wp + t1 * c
                rr = slice(t0 * c, t1 * c)
                qc = qf[r0:r1].view(n_t, c, dh)
                do_c = (dout_rows.index_select(0, band.in_map[rr]) * row_keep[rr, None]).to(dt).view(n_t, c, dh)
                o_c = out_rows.index_select(0, band.out_map[rr]).view(n_t, c, dh)
                delta_c = (do_c.to(acc) * o_c.to(acc)).sum(-1, keepdim=True)  # rowsum(dO * O)
                alpha = alpha_f[r0:r1].view(n_t, c, 1) if scaled else None
                pg = None
                if kg_z is not None:
                    z0, z1 = band.zrange(t0, t1)
                if probs:
                    p = probs[i]
                    if kg_z is not None:
                        pg = probs_g[i]
                else:  # recompute: the same masked scores, softmax and statistics as forward
                    s = torch.bmm(qc, k_win_t[t0:t1]).to(acc).masked_fill_(band.window_bad(i), fill)
                    p = torch._softmax(s, -1, False)
                    del s
                    if kg_z is not None:
                        sg = torch.bmm(qc.view(z1 - z0, -1, dh), kg_z[z0:z1].transpose(1, 2)).to(acc)
                        sg = sg.masked_fill_(band.global_key_bad(t0, t1), fill).view(n_t, c, -1)
                        pg = sg.sub_(lse_f[r0:r1].view(n_t, c, 1)).exp_()
                keep = keep_g = None
                if gen is not None:  # the same draws in the same order as forward
                    keep = _dropout_keep(p.shape, p_drop, gen, dev, acc)
                    if pg is not None:
                        keep_g = _dropout_keep(pg.shape, p_drop, gen, dev, acc)
                # the window part of a row's distribution is alpha * p: alpha scales dO (and delta) instead
                do_a = do_c if alpha is None else do_c * alpha.to(dt)
                pd = p if keep is None else p * keep
                _add_windows(dv_blocks, pd.to(dt).transpose(1, 2), do_a, t0, t1, c)
                del pd
                dp = torch.bmm(do_a, v_win_t[t0:t1]).to(acc)
                if keep is not None:
                    dp.mul_(keep)
                ds = dp.sub_(delta_c if alpha is None else delta_c * alpha).mul_(p).to(dt)
                del dp, p, keep
                dq_c = torch.bmm(ds, k_win[t0:t1]).to(acc)
                _add_windows(dk_blocks, ds.transpose(1, 2), qc, t0, t1, c)
                del ds
                if pg is not None:
                    nz, g = z1 - z0, pg.shape[-1]
                    do_z, q_z = do_c.view(nz, -1, dh), qc.view(nz, -1, dh)
                    pgd = pg if keep_g is None else pg * keep_g
                    dvg_z[z0:z1] += torch.bmm(pgd.to(dt).view(nz, -1, g).transpose(1, 2), do_z)
                    dpg = torch.bmm(do_z, vg_z[z0:z1].transpose(1, 2)).to(acc).view_as(pg)
                    if keep_g is not None:
                        dpg.mul_(keep_g)
                    dsg = dpg.sub_(delta_c).mul_(pg).to(dt).view(nz, -1, g)
                    dq_c += torch.bmm(dsg, kg_z[z0:z1]).view_as(dq_c)
                    dkg_z[z0:z1] += torch.bmm(dsg.transpose(1, 2), q_z)
                dq_f[r0:r1] = dq_c.view(-1, dh)
            if band.n_glob:  # global keys: their gradient joins the flat rows they were read from
                rows = band.g_rows.reshape(-1)
                # (index_put_ with accumulate: index_add_ costs ~100 ms here whatever the row count, torch 2.13 CPU)
                dk_f.index_put_((rows,), dkg_z.view(b, h, band.d, -1, dh).sum(2).view(-1, dh), accumulate=True)
                dv_f.index_put_((rows,), dvg_z.view(b, h, band.d, -1, dh).sum(2).view(-1, dh), accumulate=True)
            if lse_g is not None:  # global queries computed here: recompute their rows
                bh, g_all = b * h, band.n_glob
                qg = qf[band.g_rows].view(bh, g_all, dh)
                k_h, v_h, dk_h, dv_h = band.heads(kf), band.heads(vf), band.heads(dk_f), band.heads(dv_f)
                do_g = do_g.view(bh, g_all, dh)
                o_g = torch.zeros(b, h, g_all, dh, dtype=dt, device=dev)
                o_g[band.g_b, :, band.g_slot] = out_rows[band.g_out_rows].view(-1, h, dh)
                delta_g = (do_g.to(acc) * o_g.view(bh, g_all, dh).to(acc)).sum(-1, keepdim=True)
                dqg = torch.empty(bh, g_all, dh, dtype=acc, device=dev)
                for g0 in range(0, g_all, band.g_chunk):
                    g1 = min(g_all, g0 + band.g_chunk)
                    s = torch.bmm(qg[:, g0:g1], k_h.transpose(1, 2)).to(acc)
                    s.view(b, h, g1 - g0, -1).masked_fill_(band.g_query_bad[:, :, g0:g1], fill)
                    p = s.sub_(lse_g[:, g0:g1]).exp_()
                    keep = None if gen is None else _dropout_keep(p.shape, p_drop, gen, dev, acc)
                    pd = p if keep is None else p * keep
                    _acc_bmm_(dv_h, pd.to(dt).transpose(1, 2), do_g[:, g0:g1])
                    dp = torch.bmm(do_g[:, g0:g1], v_h.transpose(1, 2)).to(acc)
                    if keep is not None:
                        dp.mul_(keep)
                    ds = dp.sub_(delta_g[:, g0:g1]).mul_(p).to(dt)
                    dqg[:, g0:g1] = torch.bmm(ds, k_h)
                    _acc_bmm_(dk_h, ds.transpose(1, 2), qg[:, g0:g1])
                dq_f.index_put_((band.g_rows.reshape(-1),), dqg.view(-1, dh), accumulate=True)
            dq = band.unflatten(dq_f.mul_(band.scale)).to(qf.dtype)
            dk, dv = band.unflatten(dk_f).to(kf.dtype), band.unflatten(dv_f).to(vf.dtype)
        return dq, dk, dv, dout_g, None, None, None


def _blocked(q, k, v, m: _Masks, w: int, d: int, causal: bool, dropout_p: float,
             out_g: torch.Tensor | None = None) -> torch.Tensor:
    """Longformer attention with the blocked kernel; (B, H, N, Dh). ``out_g`` (B, H, G, Dh): outputs of the
    global queries when they come from separate projections (else they are computed inside from q, k, v).
    The :class:`_Band` of a call is built once per masks and shape (:class:`_CallCache`): the layers of a forward
    pass and their recomputation share it."""
    b, h, n, dh = q.shape
    c, wp = _block_size(w)
    key = (b, h, n, dh, w, wp, c, d, causal, _CHUNK_ELEMS, str(q.device))
    band = _BAND_CACHE.get(key, (m.real, m.glob, m.g_idx, m.g_valid), lambda: _Band(
        shape=(b, h, n, dh), w=w, wp=wp, c=c, d=d, scale=softmax_scale(dh), causal=causal, real=m.real, glob=m.glob,
        g_idx=m.g_idx, g_valid=m.g_valid, chunk_elems=_CHUNK_ELEMS))
    seed = int(torch.randint(0, 2**62, (1,))) if dropout_p > 0 else 0  # from the global CPU RNG: replayable
    return _BandedAttention.apply(q, k, v, out_g, band, dropout_p, seed)


# ---------------------------------------------------------------------------------------------
# flex backend (CUDA)
# ---------------------------------------------------------------------------------------------

_FLEX_COMPILED = None
_BLOCK_MASK_CACHE: OrderedDict = OrderedDict()
_BLOCK_MASK_CACHE_SIZE = 8


def flex_mask_mod(key_ok: torch.Tensor, glob_key: torch.Tensor | None, attention_window: int,
                  attention_dilation: int = 1, causal: bool = False):
    """The ``mask_mod(b, h, q_idx, kv_idx) -> bool`` of the window + global-key part, for flex_attention.

    Query ``i`` attends key ``j`` iff (``key_ok[b, j]`` and ``|i - j| <= w * d`` and ``(i - j) % d == 0``)
    or ``glob_key[b, j]``; and ``j <= i`` when causal. ``key_ok`` (B, N) bool marks real non-global keys,
    ``glob_key`` (B, N) bool real global keys. Rows of global queries are not covered (they attend every
    key and are computed separately). Works on index tensors of any broadcastable shape, so it can be
    evaluated on a dense grid for checking.
    """
    span = attention_window * attention_dilation

    def mask_mod(b, h, q_idx, kv_idx):
        diff = q_idx - kv_idx
        keep = (diff.abs() <= span) & key_ok[b, kv_idx]
        if attention_dilation > 1:
            keep = keep & (diff % attention_dilation == 0)
        if glob_key is not None:
            keep = keep | glob_key[b, kv_idx]
        if causal:
            keep = keep & (kv_idx <= q_idx)
        return keep

    return mask_mod


def flex_block_mask(key_ok: torch.Tensor, glob_key: torch.Tensor | None, attention_window: int,
                    attention_dilation: int = 1, causal: bool = False, block_size: int = 128):
    """BlockMask (B, 1, N, N) of :func:`flex_mask_mod` for ``flex_attention``, cached per (shape, options, mask
    contents); ``key_ok`` / ``glob_key`` are (B, N) bool on the target device. Works on CPU too (construction
    only). Raises ImportError when torch has no ``torch.nn.attention.flex_attention`` (torch < 2.5)."""
    from torch.nn.attention.flex_attention import create_block_mask

    b, n = key_ok.shape
    key = (b, n, attention_window, attention_dilation, causal, block_size, str(key_ok.device), glob_key is None)
    hit = _BLOCK_MASK_CACHE.get(key)
    if hit is not None and torch.equal(hit[0], key_ok) and (glob_key is None or torch.equal(hit[1], glob_key)):
        _BLOCK_MASK_CACHE.move_to_end(key)
        return hit[2]
    key_ok = key_ok.clone()
    glob_key = None if glob_key is None else glob_key.clone()
    mod = flex_mask_mod(key_ok, glob_key, attention_window, attention_dilation, causal)
    bm = create_block_mask(mod, b, None, n, n, device=key_ok.device, BLOCK_SIZE=block_size)
    _BLOCK_MASK_CACHE[key] = (key_ok, glob_key, bm)
    while len(_BLOCK_MASK_CACHE) > _BLOCK_MASK_CACHE_SIZE:
        _BLOCK_MASK_CACHE.popitem(last=False)
    return bm


def _flex_local(q, k, v, m: _Masks, w: int, d: int, causal: bool) -> torch.Tensor:
    global _FLEX_COMPILED
    from torch.nn.attention.flex_attention import flex_attention

    if _FLEX_COMPILED is None:
        # compiled once per new shape (past torch._dynamo's recompile limit dynamo falls back to eager flex,
        # which forms N x N scores: keep the number of distinct (B, H, N) shapes small)
        _FLEX_COMPILED = torch.compile(flex_attention, dynamic=False)
    key_ok = m.real if m.glob is None else m.real & ~m.glob
    bm = flex_block_mask(key_ok, m.glob, w, d, causal)
    dtype = q.dtype
    if torch.is_autocast_enabled(q.device.type):
        dtype = torch.get_autocast_dtype(q.device.type)
    return _FLEX_COMPILED(q.to(dtype), k.to(dtype), v.to(dtype), block_mask=bm, scale=softmax_scale(q.shape[-1]))


def _resolve_backend(backend: str, device: torch.device, dropout_p: float, dtype: torch.dtype) -> str:
    if backend == "auto":
        ok = device.type == "cuda" and dropout_p == 0 and dtype != torch.float64
        if ok:
            try:
                from torch.nn.attention import flex_attention  # noqa: F401
            except ImportError:
                ok = False
        return "flex" if ok else "blocked"
    if backend == "flex":
        if device.type != "cuda":
            raise RuntimeError(
                f"attention.backend='flex' needs a CUDA device, got {device.type!r}: in torch {torch.__version__} "
                "flex_attention has no CPU backward and its eager CPU path forms N x N scores; "
                "use attention.backend='blocked' (or 'auto', which picks 'blocked' off CUDA)")
        if dropout_p > 0:
            raise ValueError(f"attention.backend='flex' has no attention dropout (got dropout {dropout_p}); "
                             "set the dropout to 0, call .eval(), or use attention.backend='blocked' or 'auto'")
    return backend


# ---------------------------------------------------------------------------------------------
# global queries and the shared core
# ---------------------------------------------------------------------------------------------

def _global_rows(q_rows, k, v, m: _Masks, causal: bool, dropout_p: float) -> torch.Tensor:
    """Global queries (B, H, G, Dh) against every real key of k, v (B, H, N, Dh) -> (B, H, G, Dh)."""
    acc = stats_dtype(v.dtype)
    s = torch.matmul(q_rows, k.transpose(-1, -2)).to(acc) * softmax_scale(q_rows.shape[-1])  # (B, H, G, N)
    bad = ~m.real[:, None, None, :]
    if causal:
        j = torch.arange(k.shape[2], device=k.device)
        bad = bad | (j[None, None, None, :] > m.g_idx[:, None, :, None])
    p = torch.softmax(s.masked_fill(bad, neg_inf(acc)), dim=-1)
    if dropout_p > 0:
        p = F.dropout(p, p=dropout_p)
    return torch.matmul(p.to(v.dtype), v)


def _attend(q, k, v, m: _Masks, *, w: int, d: int, causal: bool, dropout_p: float, backend: str,
            global_rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Core on checked inputs. ``global_rows`` = (q of the global tokens (B, H, G, Dh), k_g, v_g (B, H, N, Dh))."""
    b, h, n, dh = q.shape
    backend = _resolve_backend(backend, q.device, dropout_p, q.dtype)
    out_g = None
    if m.glob is not None and global_rows is not None:  # separate global projections
        out_g = _global_rows(*global_rows, m, causal, dropout_p)  # (B, H, G, Dh)
    if backend == "blocked":
        return _blocked(q, k, v, m, w, d, causal, dropout_p, out_g)
    out = _flex_local(q, k, v, m, w, d, causal)
    if m.glob is None:
        return out
    if out_g is None:
        out_g = _global_rows(_gather_heads(q, m.g_idx), k, v, m, causal, dropout_p)
    bi, gi = m.g_valid.nonzero(as_tuple=True)  # slots past a row's global count hold no global token
    pos = m.g_idx[bi, gi]
    heads = torch.arange(h, device=out.device)
    return out.index_put((bi[:, None], heads[None, :], pos[:, None]), out_g[bi, :, gi].to(out.dtype))


def local_global_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    attention_window: int,
    global_attention_mask: torch.Tensor | None = None,
    padding_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    causal: bool = False,
    attention_dilation: int = 1,
    global_qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Sliding-window + global attention (Longformer, Beltagy et al. 2020, section 3.1), computed blockwise.

    With ``w = attention_window`` and ``d = attention_dilation``, query ``i`` attends key ``j`` iff key ``j``
    is real, ``j <= i`` if ``causal``, and one of

    * ``i`` is global (it attends every key),
    * ``j`` is global,
    * ``|i - j| <= w * d`` and ``(i - j) % d == 0`` (the dilated sliding window of section 3.1).

    Args:
        q, k, v: (B, H, N, Dh) float tensors (float16/bfloat16/float32/float64, promoted to one dtype);
            any N (padded internally and sliced back; the padding never changes real outputs).
        attention_window: one-sided window w >= 1, in tokens (HF Longformer's ``attention_window`` is 2w).
        global_attention_mask: optional (B, N) bool, True for global tokens (padding tokens are never global).
        padding_mask: optional (B, N) bool, True for real tokens.
        dropout_p: dropout on the attention probabilities, in [0, 1).
        causal: also require ``j <= i`` everywhere: window, global keys and global queries (section 4,
            autoregressive language modelling).
        attention_dilation: d >= 1, the dilation of the sliding window (global attention is not dilated).
        global_qkv: optional (q_g, k_g, v_g), each (B, H, N, Dh) like ``q``: section 3.1's separate global
            projections. The rows of global queries are computed from ``q_g`` at the global tokens against
            ``k_g``, ``v_g`` of every token; all other rows (including their global keys) use q, k, v.
        backend: "blocked" (PyTorch blocked kernel, any device), "flex" (``flex_attention``, CUDA only, no
            dropout) or "auto" (flex on CUDA when dropout is off and the dtype is not float64, else blocked).

    Returns:
        (B, H, N, Dh) tensor of ``v``'s dtype. Softmax statistics are computed in float32 (float64 for
        float64 inputs), also under autocast. Rows of queries with no usable key (e.g. in a fully padded
        sequence) are finite (zero with the blocked backend).

    Raises:
        ValueError: ``attention_window`` / ``attention_dilation`` not a positive integer, ``causal`` not a
            bool, unknown ``backend`` (the message lists the choices), shape mismatch, non-bool or wrongly
            shaped masks, malformed ``global_qkv``, ``dropout_p`` outside [0, 1), or dropout with "flex".
        RuntimeError: ``backend="flex"`` on a non-CUDA device (use "blocked" or "auto").
    """
    w = check_positive_int("attention.attention_window", attention_window)
    causal, d, backend = _check_options(causal, attention_dilation, backend)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    b, h, n, dh = check_qkv(q, k, v)
    if global_qkv is not None:
        if not isinstance(global_qkv, (tuple, list)) or len(global_qkv) != 3:
            raise ValueError("global_qkv must be a tuple (q_g, k_g, v_g) of (B, H, N, Dh) tensors, or None "
                             "to use q, k, v for global attention too")
        check_qkv(q, *global_qkv)
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    m = _masks(b, n, q.device, padding_mask, global_attention_mask)
    rows = None
    if global_qkv is not None and m.glob is not None:
        q_g, k_g, v_g = (t.to(dtype) for t in global_qkv)
        rows = (_gather_heads(q_g, m.g_idx), k_g, v_g)
    return _attend(q, k, v, m, w=w, d=d, causal=causal, dropout_p=dropout_p, backend=backend, global_rows=rows)


def local_global_pairs(padding_mask: torch.Tensor | None, global_attention_mask: torch.Tensor | None, *,
                       attention_window: int, attention_dilation: int = 1, causal: bool = False,
                       n: int | None = None) -> torch.Tensor:
    """Which keys each query attends in :func:`local_global_attention`, from the kernel's own masking code.

    Query ``i`` attends key ``j`` iff key ``j`` is real, ``j <= i`` if ``causal``, and ``i`` is global, or ``j``
    is global, or ``|i - j| <= w * d`` with ``(i - j) % d == 0`` (w = ``attention_window``, d =
    ``attention_dilation``; Beltagy et al. 2020, section 3.1). Padding tokens are never global. Evaluated on a
    dense grid with the kernels' mask preparation and :func:`flex_mask_mod` (the ``mask_mod`` of the flex
    backend; the blocked backend computes the same function); rows of global queries as the global pass does.

    Args:
        padding_mask / global_attention_mask: (B, N) bool or None (both None: ``n`` gives N and B = 1).
        attention_window / attention_dilation / causal: as in :func:`local_global_attention`.
        n: sequence length N when both masks are None.

    Returns:
        (B, N, N) bool, row = query, column = key; rows of padding queries are False. Memory O(B N^2).

    Raises:
        ValueError: non-positive window / dilation, masks of the wrong shape or dtype (the kernel's checks), or
            no mask and no ``n``.
    """
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
    if m.glob is not None:  # global queries: every real key (earlier ones when causal), as _global_rows computes
        rows = m.real[:, None, :].expand(b, n, n)
        if causal:
            rows = rows & (idx[None, None, :] <= idx[None, :, None])
        out = torch.where(m.glob[:, :, None], rows, out)
    return out & m.real[:, :, None]


class LocalGlobalAttention(MultiHeadProjection):
    """Multi-head Longformer attention on (B, N, D) hidden states (Beltagy et al. 2020, section 3.1).

    Args:
        d_model: model width D; n_heads: heads H (must divide D).
        attention_window: one-sided window w (each token sees w neighbours on each side).
        dropout: attention-probability dropout.
        bias: biases in the projections.
        causal: autoregressive mask ``j <= i`` everywhere (section 4, autoregressive LM).
        attention_dilation: dilation d of the sliding window (section 3.1, "Dilated Sliding Window").
        separate_global_projections: section 3.1's "Linear Projections for Global Attention": an extra
            ``in_proj_global`` (D -> 3D; HF's query_global / key_global / value_global) computes the queries of
            global tokens and the keys / values they attend to. It is initialised as a copy of ``in_proj``
            (as HF does when loading a RoBERTa checkpoint into Longformer), so a fresh module computes the same
            function as with shared projections; the two then train apart.
        backend: "auto" | "blocked" | "flex", see :func:`local_global_attention`.

    ``forward(hidden (B, N, D), padding_mask (B, N) bool = None, global_attention_mask (B, N) bool = None)
    -> (B, N, D)``, of the dtype of the projections' output (bfloat16 under CPU bf16 autocast).

    Raises:
        ValueError: ``attention_window`` / ``attention_dilation`` not a positive integer, ``causal`` or
            ``separate_global_projections`` not a bool, unknown ``backend``, or ``n_heads`` does not divide
            ``d_model``; at call time the errors of :func:`local_global_attention`.
    """

    def __init__(self, d_model: int, n_heads: int, attention_window: int = 64, dropout: float = 0.0, bias: bool = True,
                 *, causal: bool = False, attention_dilation: int = 1, separate_global_projections: bool = False,
                 backend: str = "auto"):
        super().__init__(d_model, n_heads, n_inputs=3, dropout=dropout, bias=bias)
        self.attention_window = check_positive_int("attention.attention_window", attention_window)
        self.causal, self.attention_dilation, self.backend = _check_options(causal, attention_dilation, backend)
        if not isinstance(separate_global_projections, bool):
            raise ValueError("attention.separate_global_projections must be a bool, "
                             f"got {separate_global_projections!r}")
        self.separate_global_projections = separate_global_projections
        self.in_proj_global = None
        if separate_global_projections:
            self.in_proj_global = torch.nn.Linear(d_model, 3 * d_model, bias=bias)
            with torch.no_grad():
                self.in_proj_global.weight.copy_(self.in_proj.weight)
                if bias:
                    self.in_proj_global.bias.copy_(self.in_proj.bias)

    def _inputs(self, hidden, padding_mask, global_attention_mask):
        """q, k, v (B, H, N, Dh), the masks, and the global rows (q of the global tokens (B, H, G, Dh) from
        ``in_proj_global``, k_g, v_g (B, H, N, Dh)) or None."""
        q, k, v = self.project(hidden)
        m = _masks(hidden.shape[0], hidden.shape[1], hidden.device, padding_mask, global_attention_mask)
        rows = None
        if self.in_proj_global is not None and m.glob is not None:
            h_g = torch.gather(hidden, 1, m.g_idx[:, :, None].expand(*m.g_idx.shape, hidden.shape[-1]))
            (q_g,) = self.project(h_g, linear=self.in_proj_global, parts=slice(0, 1))  # global tokens only
            k_g, v_g = self.project(hidden, linear=self.in_proj_global, parts=slice(1, 3))
            rows = (q_g, k_g, v_g)
        return q, k, v, m, rows

    def _core(self, q, k, v, m, rows, dropout_p: float):
        return _attend(q, k, v, m, w=self.attention_window, d=self.attention_dilation, causal=self.causal,
                       dropout_p=dropout_p, backend=self.backend, global_rows=rows)

    def forward(self, hidden, padding_mask=None, global_attention_mask=None):
        return self.merge(self._attend(hidden, padding_mask, global_attention_mask))

    @torch.compiler.disable
    def _attend(self, hidden, padding_mask, global_attention_mask):
        """Projections, masks and kernel -> (B, H, N, Dh); run eagerly under ``torch.compile`` (its data-dependent
        shapes and custom autograd function stay out of the compiled graphs, which hold the rest of the block)."""
        q, k, v, m, rows = self._inputs(hidden, padding_mask, global_attention_mask)
        return self._core(q, k, v, m, rows, self.attn_dropout)

    def attended_pairs(self, padding_mask=None, global_attention_mask=None, *, seq_len=None):
        """Which keys each query attends, from the window / global rule this layer's kernels mask with
        (:func:`local_global_pairs` with this layer's window, dilation and causality).

        Args:
            padding_mask / global_attention_mask: (B, N) bool or None (both None: ``seq_len`` gives N, B = 1).

        Returns:
            (B, H, N, N) bool, row = query, column = key: a view expanded over the heads (the rule is the same
            for every head, also with separate global projections); rows of padding queries are False.

        Raises:
            ValueError: masks of the wrong shape or dtype; no mask and no ``seq_len``.
        """
        pairs = local_global_pairs(padding_mask, global_attention_mask, attention_window=self.attention_window,
                                   attention_dilation=self.attention_dilation, causal=self.causal, n=seq_len)
        b, n, _ = pairs.shape
        return pairs[:, None].expand(b, self.n_heads, n, n)

    def values_map(self, hidden, padding_mask=None, global_attention_mask=None):
        """``f(v (B, H, N, Dh)) -> (B, H, N, Dh)``: this layer's kernel on ``hidden`` (B, N, D) with its own
        projections (queries / keys, and the separate global ones) and ``v`` in place of the projected values
        (also of the global rows), no dropout."""
        q, k, _, m, rows = self._inputs(hidden, padding_mask, global_attention_mask)
        return lambda v: self._core(q, k, v, m, None if rows is None else (rows[0], rows[1], v), 0.0)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", attention_window={self.attention_window}, causal={self.causal}, "
                f"attention_dilation={self.attention_dilation}, "
                f"separate_global_projections={self.separate_global_projections}, backend={self.backend!r}")
