"""Reformer LSH attention (Kitaev, Kaiser & Levskaya 2020, "Reformer: The Efficient Transformer", section 2).

Queries and keys are shared (keys are the queries normalised to unit length). Each of ``n_hashes``
rounds hashes every position with a random rotation R: bucket = argmax([xR; -xR]) (section 2,
"Locality sensitive hashing", after Andoni et al. 2015); with a factorised bucket count
``[n1, n2]`` each factor has its own slice of R and bucket = b1 + n1 * b2 (as in trax / HuggingFace).
Positions are sorted by (bucket, position) within each round, cut into chunks of ``bucket_size``,
and each chunk attends to itself, ``n_chunks_before`` previous and ``n_chunks_after`` following
chunks of the same round (no wrap-around). A position never attends to itself unless it has no other
target (section 2, "Shared-QK Transformer"). The rounds are combined with weights softmax over rounds
of each round's log-sum-exp (section 2, eq. (6)-(7) "Multi-round LSH attention"); with
``allow_duplicate_attention=False`` a key reached in several rounds is counted once (see
:func:`lsh_attention`).

Implementation: one sort per round of an integer key (bucket * N_padded + position); one packed
(B*H*N, 3*Dh) row table [q / sqrt(Dh) | k | v] gathered with ``index_select`` per block of chunks, the
key/value windows (the chunk and its neighbours) being strided views of the gathered rows, not copies;
masks from per-slot integer codes compared by broadcasting (one comparison for the usual cases); the
self mask written on the tile's diagonal; un-sorting by gathers with the inverse permutation (computed
by one scatter, no second argsort). Everything runs inside one ``torch.autograd.Function`` that keeps
for backward only the packed rows, the output and O(n_hashes * N) statistics (the per-row log-sum-exp), plus
the probability tiles while they are small (``_STORE_PROBS_MAX``); larger ones are recomputed tile by tile in
backward, as FlashAttention does (Dao et al. 2022, section 3.1), so the working set stays a few tiles.
Time O(n_hashes * N * log N) for the sort plus O(n_hashes * N * bucket_size * K * Dh) for the scores,
K = 1 + n_chunks_before + n_chunks_after; memory O(n_hashes * N * Dh) plus a few tiles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ._common import MultiHeadProjection, check_mask, check_positive_int, check_qkv, neg_inf, softmax_scale, stats_dtype

# The score tiles: the chunks are processed in about _BLOCKS blocks whose (G, bucket_size, K * bucket_size)
# tiles hold between _MIN_TILE and _MAX_TILE elements (16 to 64 MiB in float32). Few blocks: every op of a
# block is one OpenMP parallel region, and on a busy machine each region can wait a scheduler slice for a
# descheduled thread (measured: 4 blocks instead of 1 at N=4096 made a contended run 1.7x slower); bounded
# tiles: the working set beyond the saved probabilities stays a few tiles.
_BLOCKS = 4
_MIN_TILE = 1 << 22
_MAX_TILE = 1 << 24
_EPS = 1e-12  # F.normalize's default
# Probability tiles of all chunks together up to this many elements (256 MiB in float32; N = 64K at the
# benchmark's settings, 4 heads, 2 rounds, bucket 64, one chunk back) are kept for backward; above it the backward
# recomputes each tile from the packed rows and the per-row log-sum-exp (one more bmm per tile), so a layer's
# memory stays O(n_hashes * N * Dh) plus a few tiles at the lengths where it decides what fits. Measured on the
# 2-core development machine at N = 16K / 32K, recomputing was 18% / 7% slower for 13% less peak memory, hence
# the high threshold.
_STORE_PROBS_MAX = 1 << 26


# ----------------------------------------------------------------------------------------------- buckets
def _check_n_buckets(n_buckets, name: str = "attention.n_buckets") -> int | tuple[int, ...]:
    """Return ``n_buckets`` as an int or a tuple of ints (factors), or raise ``ValueError``."""
    def bad(v) -> bool:
        return isinstance(v, bool) or not isinstance(v, int) or v < 2 or v % 2
    if isinstance(n_buckets, Sequence) and not isinstance(n_buckets, str):
        factors = tuple(n_buckets)
        if not factors or any(bad(f) for f in factors):
            raise ValueError(f"{name} must be an even integer >= 2 or a list of them (factorised hashing, "
                             f"e.g. [16, 32]), got {list(n_buckets)!r}")
        return factors[0] if len(factors) == 1 else factors
    if bad(n_buckets):
        raise ValueError(f"{name} must be an even integer >= 2 (or a list of even factors such as [16, 32]), "
                         f"got {n_buckets!r}")
    return int(n_buckets)


def _total_buckets(n_buckets: int | tuple[int, ...]) -> int:
    return n_buckets if isinstance(n_buckets, int) else math.prod(n_buckets)


def default_n_buckets(seq_len: int, bucket_size: int) -> int | list[int]:
    """Reformer's automatic bucket count for a (padded) length ``seq_len`` (section 2 / HuggingFace's rule).

    About two buckets per chunk: ``n = 2 * ceil(seq_len / bucket_size)`` (even, >= 2). When ``n`` exceeds
    ``limit = 2 * max(isqrt(seq_len // bucket_size), bucket_size)`` (HuggingFace's limit with
    ``max_position_embeddings = seq_len``) the hash is factorised as HuggingFace does: ``n`` is rounded
    up to ``2**p`` and split into ``[2**(p // 2), 2**(p - p // 2)]`` (each factor even), so the rotation
    has ``n1/2 + n2/2`` columns instead of ``n/2``.

    Returns:
        an int, or a list of two ints whose product is the number of buckets.

    Raises:
        ValueError: non-positive ``seq_len`` / ``bucket_size``.
    """
    check_positive_int("seq_len", seq_len)
    check_positive_int("attention.bucket_size", bucket_size)
    n = max(2, 2 * (-(-seq_len // bucket_size)))
    limit = 2 * max(math.isqrt(seq_len // bucket_size), bucket_size)
    if n <= limit:
        return n
    p = (n - 1).bit_length()  # 2**p >= n
    return [2 ** (p // 2), 2 ** (p - p // 2)]


def random_rotations(
    head_dim: int,
    n_hashes: int,
    n_buckets: int | Sequence[int],
    *,
    n_heads: int | None = None,
    seed: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Random Gaussian rotations for angular LSH (Reformer section 2, after Andoni et al. 2015).

    Args:
        head_dim: Dh. n_hashes: hash rounds. n_buckets: even int, or a list of even factors.
        n_heads: ``None`` for one rotation shared by all heads; an int H for one rotation per head.
        seed: seeds a private CPU generator; ``None`` draws from torch's global RNG.
        device: where the result goes (it is always drawn on the CPU, so seeds reproduce across devices).

    Returns:
        float32 tensor (Dh, n_hashes, sum(n_i) / 2), or (H, Dh, n_hashes, sum(n_i) / 2) with ``n_heads``.

    Raises:
        ValueError: bad ``n_buckets`` / ``n_hashes``.
    """
    check_positive_int("attention.n_hashes", n_hashes)
    nb = _check_n_buckets(n_buckets)
    cols = (nb if isinstance(nb, int) else sum(nb)) // 2
    gen = torch.Generator(device="cpu").manual_seed(int(seed)) if seed is not None else None
    shape = (head_dim, n_hashes, cols) if n_heads is None else (n_heads, head_dim, n_hashes, cols)
    return torch.randn(shape, generator=gen, dtype=torch.float32).to(device)


def hash_buckets(
    qk: torch.Tensor,
    *,
    n_hashes: int,
    n_buckets: int | Sequence[int],
    seed: int | None = None,
    random_rotations_per_head: bool = False,
    rotations: torch.Tensor | None = None,
) -> torch.Tensor:
    """Angular LSH (Reformer section 2): bucket = argmax([xR; -xR]) per hash round.

    With factors ``n_buckets = [n1, n2, ...]`` the last dim of R is split into slices of ``n_i / 2``
    columns and bucket = b1 + n1 * b2 + n1 * n2 * b3 + ... with b_i = argmax([x R_i; -x R_i]).

    Args:
        qk: (B, H, N, Dh) float vectors to hash (their scale does not matter); hashed in float32
            (float64 stays float64), outside autocast.
        n_hashes: hash rounds (>= 1). n_buckets: even int >= 2, or a list of even factors.
        seed: seeds the rotations (a private generator); ``None`` draws them from torch's global RNG.
        random_rotations_per_head: one rotation per head (True) or one shared by all heads (False).
        rotations: explicit rotations instead of random ones, (Dh, n_hashes, sum(n_i)/2) shared or
            (H, Dh, n_hashes, sum(n_i)/2) per head (see :func:`random_rotations`).

    Returns:
        (B, H, n_hashes, N) int64 bucket ids in [0, prod(n_i)).

    Raises:
        ValueError: ``n_buckets`` odd or < 2, ``n_hashes`` not positive, ``rotations`` of the wrong shape.
    """
    n_hashes = check_positive_int("attention.n_hashes", n_hashes)
    nb = _check_n_buckets(n_buckets)
    factors = (nb,) if isinstance(nb, int) else nb
    _, h, _, dh = qk.shape
    cols = sum(factors) // 2
    if rotations is None:
        rotations = random_rotations(dh, n_hashes, nb, n_heads=h if random_rotations_per_head else None,
                                     seed=seed, device=qk.device)
    shared, per_head = (dh, n_hashes, cols), (h, dh, n_hashes, cols)
    if tuple(rotations.shape) not in (shared, per_head):
        raise ValueError(f"rotations must have shape {shared} (shared) or {per_head} (per head) for "
                         f"n_buckets={n_buckets!r}, got {tuple(rotations.shape)}")
    dtype = torch.promote_types(qk.dtype, torch.float32)
    x = qk.detach().to(dtype)
    rot = rotations.to(device=qk.device, dtype=dtype)
    # [R_1, -R_1, R_2, -R_2, ...]: argmax([xR_i; -xR_i]) for every factor from one matmul
    parts, offset = [], 0
    for f in factors:
        parts += [rot[..., offset:offset + f // 2], -rot[..., offset:offset + f // 2]]
        offset += f // 2
    width = 2 * cols
    rot = torch.cat(parts, dim=-1)
    with torch.autocast(qk.device.type, enabled=False):
        if rot.dim() == 3:
            rotated = torch.matmul(x, rot.reshape(dh, n_hashes * width))  # (B, H, N, R * width)
        else:
            rotated = torch.matmul(x, rot.reshape(h, dh, n_hashes * width)[None])
    rotated = rotated.view(*x.shape[:3], n_hashes, width)
    buckets, offset, product = None, 0, 1
    for f in factors:
        b = rotated[..., offset:offset + f].argmax(dim=-1)
        buckets = b if buckets is None else buckets.add_(b, alpha=product)
        offset, product = offset + f, product * f
    return buckets.permute(0, 1, 3, 2).contiguous()  # (B, H, R, N)


# ---------------------------------------------------------------------------------------------- the plan
@dataclass
class _Plan:
    """Index tensors and settings shared by the forward and backward passes of the chunked core."""

    b: int
    h: int
    n: int
    dh: int
    bs: int
    n_chunks: int
    n_pad: int
    n_hashes: int
    before: int
    after: int
    mode: str  # "col" | "causal" | "bucket" | "bucket_causal"
    scale: float
    acc: torch.dtype
    fill: float
    dropout_p: float
    rows_q: torch.Tensor  # (M*bs,) row of each sorted slot in the (B*H*N, Dh) inputs (padding tail clamped)
    rows_ext: torch.Tensor  # ((M+K-1)*bs,) rows of the key buffer: `before` chunks of filler, slots, `after` chunks
    kcode: torch.Tensor  # (M, K*bs) key code of every window slot (invalid slots carry a sentinel)
    lo: torch.Tensor | None  # (M, bs) per-query bounds for the key codes
    hi: torch.Tensor | None
    undo: torch.Tensor  # (R, B*H*N) sorted slot of each (round, real row)
    posidx: torch.Tensor  # (M*bs,) index of each slot in the (B*H, R, Np) position-order layout
    heads_last: bool = False  # rows of the inputs / outputs in (batch, position, head) order
    logc: "_DupCounts | None" = None

    @property
    def k(self) -> int:
        return self.before + 1 + self.after

    @property
    def m(self) -> int:
        return self.b * self.h * self.n_hashes * self.n_chunks

    def block(self) -> int:
        """Chunks per block: about ``_BLOCKS`` blocks, tiles of ``_MIN_TILE`` to ``_MAX_TILE`` elements."""
        per_chunk = self.bs * self.k * self.bs
        tile = min(max(_MIN_TILE, -(-self.m * per_chunk // _BLOCKS)), _MAX_TILE)
        return min(self.m, max(1, tile // per_chunk))


@dataclass
class _DupCounts:
    """Per-round chunk (and bucket) of every query slot and window slot, for ``allow_duplicate_attention=False``."""

    qch: torch.Tensor  # (M, bs, R)
    kch: torch.Tensor  # (M, K*bs, R)
    qbk: torch.Tensor | None
    kbk: torch.Tensor | None
    self_count: torch.Tensor | None = None  # (M, bs) rounds in which each query attends only itself


def _disallowed(plan: _Plan, m0: int, m1: int, out: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """Bool (g, bs, K*bs) (or broadcastable) mask of the keys a query may not attend (self excluded separately)."""
    kc = plan.kcode[m0:m1, None, :]
    if plan.mode == "col":
        return kc
    if plan.mode == "causal":
        return torch.ge(kc, plan.hi[m0:m1, :, None], out=out)
    if plan.mode == "bucket":
        return torch.ne(kc, plan.lo[m0:m1, :, None], out=out)
    torch.lt(kc, plan.lo[m0:m1, :, None], out=out)
    torch.ge(kc, plan.hi[m0:m1, :, None], out=tmp)
    return out.logical_or_(tmp)


def _log_counts(plan: _Plan, m0: int, m1: int, cnt: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """log(number of rounds in which each window key is attended by the query), >= 0, (g, bs, K*bs)."""
    d = plan.logc
    cnt.zero_()
    for r in range(plan.n_hashes):
        # key chunk - query chunk in round r must lie in [-before, after]
        diff = torch.sub(d.kch[m0:m1, None, :, r], d.qch[m0:m1, :, None, r])
        inside = torch.ge(diff, -plan.before, out=tmp).logical_and_(diff <= plan.after)
        if d.qbk is not None:
            inside.logical_and_(d.kbk[m0:m1, None, :, r] == d.qbk[m0:m1, :, None, r])
        cnt.add_(inside)
    cnt[:, :, plan.before * plan.bs:(plan.before + 1) * plan.bs].diagonal(dim1=1, dim2=2).copy_(d.self_count[m0:m1])
    return cnt.clamp_(min=1).to(plan.acc).log_()


def _scores(plan: _Plan, m0: int, m1: int, q, kwin, buf, maskbuf, maskbuf2, cntbuf):
    """Masked score tile (g, bs, K*bs) of chunks [m0, m1); returns (scores, raw self scores, diagonal view)."""
    bs, before = plan.bs, plan.before
    s = torch.bmm(q, kwin.transpose(1, 2), out=buf)
    diag = s[:, :, before * bs:(before + 1) * bs].diagonal(dim1=1, dim2=2)
    if plan.logc is not None:
        s.sub_(_log_counts(plan, m0, m1, cntbuf, maskbuf))
    raw = diag.clone()
    s.masked_fill_(_disallowed(plan, m0, m1, maskbuf, maskbuf2), plan.fill)
    diag.fill_(plan.fill)  # a position attends to itself only when it has no other target
    return s, raw, diag


def _masked_scores(plan: _Plan, m0: int, m1: int, q, kwin, buf, masks):
    """Masked score tile (g, bs, K*bs) of chunks [m0, m1) with the self score restored for the queries that have
    no other target (Reformer section 2, shared-QK); returns (scores, row maximum (g, bs))."""
    g = m1 - m0
    s, raw, diag = _scores(plan, m0, m1, q, kwin, buf[:g], *(mb[:g] if mb is not None else None for mb in masks))
    rowmax = s.amax(dim=-1)
    no = rowmax == plan.fill
    if bool(no.any()):  # only itself to attend to: restore its score
        diag.copy_(torch.where(no, raw, diag))
        rowmax = torch.where(no, raw, rowmax)
    return s, rowmax


class _LSHChunkAttention(torch.autograd.Function):
    """Chunked attention of the sorted slots and the combination of the rounds -> (B, H, N, Dh).

    Inputs are either ``qk`` and ``v`` (B, H, N, Dh), or the fused projection ``qkv`` (B, N, 2, H, Dh) (then
    the rows are kept in (batch, position, head) order, so no transposes or select-backward copies are
    needed). Saves the packed rows [q / sqrt(Dh), k, v] (3 * B*H*N*Dh), the output, O(n_hashes * N) statistics
    and, up to ``_STORE_PROBS_MAX`` elements, the probability tiles (n_hashes * B*H*N * K*bucket_size; above
    that the backward recomputes them). Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, qk, v, qkv, plan: _Plan):
        if qkv is not None:
            qk, v = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
        with torch.autocast(qk.device.type, enabled=False):
            src, norm = _pack(qk, v, plan)
            out, probs, w_slot, drop, lse = _forward(src, plan, keep=any(ctx.needs_input_grad))
        ctx.plan = plan
        ctx.stats = (norm, probs, w_slot, drop, lse)
        ctx.dtypes = (qk.dtype, v.dtype)
        ctx.fused = qkv is not None
        result = _from_rows(out, plan)
        ctx.save_for_backward(src, result)  # the statistics-dtype output, whatever v's dtype
        return result if v.dtype == plan.acc else result.to(v.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        src, out = ctx.saved_tensors
        plan = ctx.plan
        b, h, n, dh = plan.b, plan.h, plan.n, plan.dh
        with torch.autocast(grad.device.type, enabled=False):
            if ctx.fused:
                dqkv = torch.empty(b, n, 2, h, dh, dtype=ctx.dtypes[1], device=grad.device)
                # dst are (B, H, N, Dh) views (as _backward expects) of the (B, N, 2, H, Dh) gradient
                _backward(src, out, grad, plan, *ctx.stats,
                          dst=(dqkv[:, :, 0].transpose(1, 2), dqkv[:, :, 1].transpose(1, 2)))
                return None, None, dqkv, None
            dqk = torch.empty(b, h, n, dh, dtype=ctx.dtypes[0], device=grad.device)
            dv = torch.empty(b, h, n, dh, dtype=ctx.dtypes[1], device=grad.device)
            _backward(src, out, grad, plan, *ctx.stats, dst=(dqk, dv))
            return dqk, dv, None, None


def _layout(x: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """A (B, H, N, ...) tensor viewed in the plan's row order: (B, N, H, ...) when heads are last."""
    return x.transpose(1, 2) if plan.heads_last else x


def _from_rows(rows: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """(B*H*N, Dh) rows in the plan's order -> (B, H, N, Dh) view."""
    if plan.heads_last:
        return rows.view(plan.b, plan.n, plan.h, plan.dh).transpose(1, 2)
    return rows.view(plan.b, plan.h, plan.n, plan.dh)


def _pack(qk: torch.Tensor, v: torch.Tensor, plan: _Plan) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [q / sqrt(Dh) | k = qk / max(||qk||, eps) | v] as one (B*H*N, 3*Dh) ``acc`` tensor in the plan's
    row order, and max(||qk||, eps) per row."""
    acc = plan.acc
    qk, v = _layout(qk, plan), _layout(v, plan)
    src = torch.empty(*qk.shape[:3], 3, plan.dh, dtype=acc, device=qk.device)
    qs, ks, vs = src.unbind(3)
    norm = torch.linalg.vector_norm(qk, dim=-1, dtype=acc).clamp_(min=_EPS)
    if qk.dtype == acc:
        torch.mul(qk, plan.scale, out=qs)
        torch.div(qk, norm[..., None], out=ks)
    else:
        qs.copy_(qk)
        torch.div(qs, norm[..., None], out=ks)
        qs.mul_(plan.scale)
    vs.copy_(v)
    return src.view(-1, 3 * plan.dh), norm.view(-1)


def _block_views(plan: _Plan, x: torch.Tensor, g: int):
    """Sorted queries (g, bs, Dh) and key / value windows (g, K*bs, Dh) as views of the gathered packed rows."""
    bs, dh, kk, before = plan.bs, plan.dh, plan.k, plan.before
    q = x[before * bs:(before + g) * bs, :dh].unflatten(0, (g, bs))
    kwin = x.as_strided((g, kk * bs, dh), (bs * 3 * dh, 3 * dh, 1), x.storage_offset() + dh)
    vwin = x.as_strided((g, kk * bs, dh), (bs * 3 * dh, 3 * dh, 1), x.storage_offset() + 2 * dh)
    return q, kwin, vwin


def _forward(src: torch.Tensor, plan: _Plan, keep: bool):
    """Attention of every sorted slot, combined over the rounds.

    ``keep`` (gradients needed): also return the probability tiles when they total at most ``_STORE_PROBS_MAX``
    elements (else ``None``: the backward recomputes them from ``lse``). Returns (out, probs, w_slot, drop, lse).
    """
    acc, bs, dh, kk, m_total = plan.acc, plan.bs, plan.dh, plan.k, plan.m
    dev = src.device
    g_max = plan.block()
    xbuf = torch.empty((g_max + kk - 1) * bs, 3 * dh, dtype=acc, device=dev)
    sbuf = torch.empty(g_max, bs, kk * bs, dtype=acc, device=dev)
    masks = _mask_buffers(plan, g_max, dev)
    out_sorted = torch.empty(m_total * bs, dh, dtype=acc, device=dev)
    lse = torch.empty(m_total, bs, dtype=acc, device=dev)
    drop = torch.empty(m_total, bs, kk * bs, dtype=torch.bool, device=dev) if plan.dropout_p > 0 else None
    keep = keep and m_total * bs * kk * bs <= _STORE_PROBS_MAX
    probs = [] if keep else None
    pbuf = None if keep else torch.empty_like(sbuf)

    for m0 in range(0, m_total, g_max):
        m1 = min(m0 + g_max, m_total)
        g = m1 - m0
        x = torch.index_select(src, 0, plan.rows_ext[m0 * bs:(m1 + kk - 1) * bs], out=xbuf[:(g + kk - 1) * bs])
        q, kwin, vwin = _block_views(plan, x, g)
        s, rowmax = _masked_scores(plan, m0, m1, q, kwin, sbuf, masks)
        p = torch._softmax(s, -1, False) if keep else torch._softmax(s, -1, False, out=pbuf[:g])
        # log-sum-exp = max - log(max probability), the max probability being 1 / sum(exp(s - max))
        torch.sub(rowmax, p.amax(dim=-1).log_(), out=lse[m0:m1])
        if keep:
            probs.append(p)  # for backward (one tile per block)
        if drop is not None:
            kept = torch.rand(p.shape, dtype=acc, device=dev) >= plan.dropout_p
            drop[m0:m1] = kept
            p = p * kept * (1.0 / (1.0 - plan.dropout_p))
        torch.bmm(p, vwin, out=out_sorted[m0 * bs:m1 * bs].view(g, bs, dh))

    # combine the rounds (eq. 6-7): weights softmax over rounds of the per-round log-sum-exp;
    # slots of the padding tail (positions >= N) get weight 0
    bh, r, n, n_pad = plan.b * plan.h, plan.n_hashes, plan.n, plan.n_pad
    if r == 1:
        w_pos = torch.ones(bh, 1, n_pad, dtype=acc, device=dev)
    else:
        w_pos = torch.empty(bh * r * n_pad, dtype=acc, device=dev)
        w_pos[plan.posidx] = lse.view(-1)
        w_pos = torch.softmax(w_pos.view(bh, r, n_pad), dim=1)
    w_pos[..., n:] = 0
    w_slot = w_pos.view(-1)[plan.posidx].view(m_total, bs)
    del xbuf, sbuf, pbuf, masks
    out = out_sorted.index_select(0, plan.undo[0])
    if r > 1:
        w_pos = w_pos[..., :n].view(plan.b, plan.h, r, n)  # weights in the rows' order, per round
        w_rows = (w_pos.permute(2, 0, 3, 1) if plan.heads_last else w_pos.permute(2, 0, 1, 3)).reshape(r, -1, 1)
        out.mul_(w_rows[0])
        for i in range(1, r):
            out.addcmul_(out_sorted.index_select(0, plan.undo[i]), w_rows[i])
    return out, probs, w_slot, drop, lse


def _mask_buffers(plan: _Plan, g_max: int, dev):
    shape = (g_max, plan.bs, plan.k * plan.bs)
    need = plan.mode != "col" or plan.logc is not None
    return (torch.empty(shape, dtype=torch.bool, device=dev) if need else None,
            torch.empty(shape, dtype=torch.bool, device=dev) if need else None,
            torch.empty(shape, dtype=torch.int32, device=dev) if plan.logc is not None else None)


def _window_grad(plan: _Plan, dst: torch.Tensor, m0: int, m1: int, a: torch.Tensor, rhs: torch.Tensor) -> None:
    """dst[window slots of chunks m0..m1) += a^T rhs, window offset by offset; the last offset reaches rows
    no earlier block wrote, so it overwrites (no zero-initialised buffer needed)."""
    bs, kk, g = plan.bs, plan.k, m1 - m0
    for o in reversed(range(kk)):
        rows = dst[(m0 + o) * bs:(m1 + o) * bs].view(g, bs, rhs.shape[-1])
        lhs = a[:, :, o * bs:(o + 1) * bs].transpose(1, 2)
        if o == kk - 1:
            torch.bmm(lhs, rhs, out=rows)
        else:
            rows.baddbmm_(lhs, rhs)


def _backward(src, out, grad, plan: _Plan, norm, probs, w_slot, drop, lse, dst):
    """Gradients of qk and v, written into ``dst`` = (dqk, dv), (B, H, N, Dh)-shaped views of any layout.

    ``probs``: the forward's probability tiles, or ``None`` to recompute each tile as exp(s - lse) from the
    packed rows (the masked scores of :func:`_masked_scores` and the per-row log-sum-exp of the forward).
    """
    acc, bs, dh, kk, m_total, before = plan.acc, plan.bs, plan.dh, plan.k, plan.m, plan.before
    dev = src.device
    g_rows = _layout(grad, plan).to(acc).reshape(-1, dh)
    # dS = P * (dP - c), c_i = w_i * (g_i . out_i) with g, out the combined output's gradient and value:
    # sum_j P_ij dP_ij + d lse_i = w_i (g_i . o_i^r) + w_i (g_i . o_i^r - g_i . out_i) (softmax over rounds)
    gdot = torch.linalg.vecdot(g_rows, _layout(out, plan).reshape(-1, dh).to(acc))  # (B*H*N,)
    c_slot = gdot[plan.rows_q].view(m_total, bs).mul_(w_slot)
    # gradients in sorted order (keys and values with the filler chunks of rows_ext), un-sorted at the end
    dq_s = torch.empty(m_total * bs, dh, dtype=acc, device=dev)
    # every block overwrites its last window offset (rows no earlier block reached) and accumulates the others
    dk_s = torch.empty((m_total + kk - 1) * bs, dh, dtype=acc, device=dev)
    dv_s = torch.empty_like(dk_s)
    dk_s[:(kk - 1) * bs] = 0
    dv_s[:(kk - 1) * bs] = 0
    g_max = plan.block()
    xbuf = torch.empty((g_max + kk - 1) * bs, 3 * dh, dtype=acc, device=dev)
    gbuf = torch.empty(g_max * bs, dh, dtype=acc, device=dev)
    dpbuf = torch.empty(g_max, bs, kk * bs, dtype=acc, device=dev)
    pbuf = masks = None
    if probs is None:
        pbuf = torch.empty_like(dpbuf)
        masks = _mask_buffers(plan, g_max, dev)
    keep_scale = 1.0 / (1.0 - plan.dropout_p) if plan.dropout_p > 0 else 1.0

    for m0 in range(0, m_total, g_max):
        m1 = min(m0 + g_max, m_total)
        g = m1 - m0
        x = torch.index_select(src, 0, plan.rows_ext[m0 * bs:(m1 + kk - 1) * bs], out=xbuf[:(g + kk - 1) * bs])
        q, kwin, vwin = _block_views(plan, x, g)
        if probs is None:
            p, _ = _masked_scores(plan, m0, m1, q, kwin, pbuf, masks)
            p = p.sub_(lse[m0:m1, :, None]).exp_()
        else:
            p = probs[m0 // g_max]
        gq = torch.index_select(g_rows, 0, plan.rows_q[m0 * bs:m1 * bs], out=gbuf[:g * bs]).view(g, bs, dh)
        gq.mul_(w_slot[m0:m1, :, None])  # gradient of this round's output
        dp = torch.bmm(gq, vwin.transpose(1, 2), out=dpbuf[:g])
        if drop is not None:
            keep = drop[m0:m1]
            pd = p * keep * keep_scale
            dp.mul_(keep).mul_(keep_scale)
        else:
            pd = p
        _window_grad(plan, dv_s, m0, m1, pd, gq)
        ds = dp.sub_(c_slot[m0:m1, :, None]).mul_(p)
        _window_grad(plan, dk_s, m0, m1, ds, q)
        torch.bmm(ds, kwin, out=dq_s[m0 * bs:m1 * bs].view(g, bs, dh))
    del xbuf, gbuf, dpbuf, pbuf, masks
    # un-sort: every (round, row) is one sorted slot (plan.undo), key slots sit `before` chunks further on
    r = plan.n_hashes
    shape = _layout(dst[0], plan).shape
    undo = plan.undo.view(-1)
    dq = dq_s.index_select(0, undo).view(r, *shape).sum(dim=0)
    del dq_s
    undo = undo + before * bs
    torch.sum(dv_s.index_select(0, undo).view(r, *shape), dim=0, out=_layout(dst[1], plan))
    del dv_s
    dk = dk_s.index_select(0, undo).view(r, *shape).sum(dim=0)
    del dk_s
    # q = qk / sqrt(Dh); k = qk / max(||qk||, eps): dqk = dq / sqrt(Dh) + (dk - k (k . dk)) / max(||qk||, eps)
    k = src.view(*shape[:3], 3, dh)[..., 1, :]
    norm = norm.view(shape[:3])
    dk.addcmul_(k, torch.linalg.vecdot(k, dk)[..., None], value=-1).div_(norm[..., None])
    torch.add(dk, dq, alpha=plan.scale, out=_layout(dst[0], plan))


# ------------------------------------------------------------------------------------------ the function
def _check_chunks(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"attention.{name} must be an integer >= 0, got {value!r}")
    return value


def lsh_attention(
    qk: torch.Tensor,
    v: torch.Tensor,
    *,
    n_hashes: int,
    bucket_size: int,
    padding_mask: torch.Tensor | None = None,
    seed: int | None = None,
    n_buckets: int | Sequence[int] | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    buckets: torch.Tensor | None = None,
    return_buckets: bool = False,
    attend_across_buckets: bool = True,
    allow_duplicate_attention: bool = True,
    random_rotations_per_head: bool = False,
    n_chunks_before: int = 1,
    n_chunks_after: int = 0,
):
    """Reformer LSH attention with shared query/key (Kitaev et al. 2020, section 2).

    Args:
        qk: (B, H, N, Dh) float shared queries/keys; keys are ``qk / ||qk||``; scores are q . k / sqrt(Dh).
        v: (B, H, N, Dh) values, same shape. Scores and softmax statistics are float32 (float64 stays
            float64) whatever the input dtype, also under bf16/fp16 autocast.
        n_hashes: hash rounds (>= 1); more rounds approximate full attention better.
        bucket_size: chunk length in tokens; positions past N up to a multiple of it are padding.
        padding_mask: optional (B, N) bool, True for real tokens. Padded positions are hashed into an
            extra last bucket (sorted after every real token) and masked as keys, so they never change
            real outputs.
        seed: makes the random rotations reproducible; ``None`` uses torch's global RNG.
        n_buckets: even number of hash buckets, or a list of even factors ``[n1, n2]`` (factorised hash,
            ``n1 * n2`` buckets, bucket = b1 + n1 * b2); default :func:`default_n_buckets` of the
            padded length (Reformer's ``2 * ceil(N / bucket_size)``, factorised when large).
            With a fixed ``n_buckets`` and ``seed`` the real outputs do not depend on how much padding follows.
        causal: key positions after the query position are masked (position 0 attends only itself).
        dropout_p: dropout on the attention probabilities.
        buckets: (B, H, n_hashes, N_padded) int buckets from an earlier call, to replay the same hashing
            (reversible layers recompute the forward pass in backward).
        return_buckets: also return the buckets used.
        attend_across_buckets: False masks keys whose bucket in that round differs from the query's
            (chunks may straddle bucket boundaries; trax / reformer-pytorch have the same switch).
        allow_duplicate_attention: False counts a (query, key) pair attended in several rounds once: the
            score of key j for query i is lowered by log(c_ij), c_ij = the number of rounds in which j is an
            *attended* key of i. In a round, j != i is attended iff j lies in one of the chunks i looks at
            (its own, ``n_chunks_before`` previous, ``n_chunks_after`` following, same round, no
            wrap-around) and passes the masks (j real; j < i when causal; same bucket when
            ``attend_across_buckets=False``); i itself is attended in the rounds where it has no other
            target. The combined output is then the softmax over the union of attended keys.
        random_rotations_per_head: one random rotation per head (True) or one shared by all heads (False).
        n_chunks_before / n_chunks_after: neighbouring chunks (in sorted order, within the round, no
            wrap-around) each chunk attends to besides itself; Reformer uses 1 and 0.

    Returns:
        (B, H, N, Dh) tensor of ``v``'s dtype, or ``(out, buckets)`` with ``return_buckets`` (buckets:
        (B, H, n_hashes, N_padded) int64, padding positions in bucket ``prod(n_buckets)``).

    Raises:
        ValueError: non-positive ``n_hashes`` / ``bucket_size``, odd ``n_buckets`` (or factor), negative
            ``n_chunks_before`` / ``n_chunks_after``, ``dropout_p`` outside [0, 1), a ``buckets`` tensor of
            the wrong shape, shape or mask errors.
    """
    return _lsh_attention(
        qk, v, None, n_hashes=n_hashes, bucket_size=bucket_size, padding_mask=padding_mask, seed=seed,
        n_buckets=n_buckets, causal=causal, dropout_p=dropout_p, buckets=buckets, return_buckets=return_buckets,
        attend_across_buckets=attend_across_buckets, allow_duplicate_attention=allow_duplicate_attention,
        random_rotations_per_head=random_rotations_per_head, n_chunks_before=n_chunks_before,
        n_chunks_after=n_chunks_after)


def _lsh_attention(qk, v, qkv, *, n_hashes, bucket_size, padding_mask, seed, n_buckets, causal, dropout_p, buckets,
                   return_buckets, attend_across_buckets, allow_duplicate_attention, random_rotations_per_head,
                   n_chunks_before, n_chunks_after):
    """:func:`lsh_attention`; with ``qkv`` (B, N, 2, H, Dh) (the fused projection, of which ``qk`` and ``v``
    are views) the kernel works in (batch, position, head) row order and returns gradients for ``qkv``."""
    n_hashes = check_positive_int("attention.n_hashes", n_hashes)
    bs = check_positive_int("attention.bucket_size", bucket_size)
    before = _check_chunks("n_chunks_before", n_chunks_before)
    after = _check_chunks("n_chunks_after", n_chunks_after)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"attention dropout must be in [0, 1), got {dropout_p}")
    b, h, n, dh = check_qkv(qk, v)
    padding_mask = check_mask("padding_mask", padding_mask, b, n)
    acc = stats_dtype(v.dtype)

    n_chunks = -(-n // bs)
    n_pad = n_chunks * bs
    if padding_mask is not None and bool(padding_mask.all()):
        padding_mask = None  # nothing to mask
    if qk.numel() == 0:  # no positions (or no batch / heads): nothing to attend
        out = v * 0 + qk.sum() * 0 if qkv is None else (qkv * 0).sum(2).transpose(1, 2)
        if buckets is None:
            buckets = torch.zeros(b, h, n_hashes, n_pad, dtype=torch.long, device=qk.device)
        return (out, buckets) if return_buckets else out
    hashed_here = buckets is None
    if hashed_here:
        nb = _check_n_buckets(n_buckets if n_buckets is not None else default_n_buckets(n_pad, bs))
        total = _total_buckets(nb)
        buckets = hash_buckets(qk, n_hashes=n_hashes, n_buckets=nb, seed=seed,
                               random_rotations_per_head=random_rotations_per_head)
        if padding_mask is not None:
            buckets.masked_fill_(~padding_mask[:, None, None, :], total)  # padding sorts last
        if n_pad > n:
            buckets = torch.nn.functional.pad(buckets, (0, n_pad - n), value=total)
    elif tuple(buckets.shape) != (b, h, n_hashes, n_pad):
        raise ValueError(f"buckets must have shape {(b, h, n_hashes, n_pad)}, got {tuple(buckets.shape)}")

    plan = _make_plan(buckets, padding_mask, total if hashed_here else None, b=b, h=h, n=n, dh=dh, bs=bs,
                      before=before, after=after, causal=causal, across=attend_across_buckets,
                      dedup=not allow_duplicate_attention, dropout_p=float(dropout_p), acc=acc,
                      heads_last=qkv is not None)
    if qkv is not None:
        out = _LSHChunkAttention.apply(None, None, qkv, plan)
    else:
        out = _LSHChunkAttention.apply(qk, v, None, plan)
    return (out, buckets) if return_buckets else out


def _make_plan(buckets, padding_mask, pad_bucket, *, b, h, n, dh, bs, before, after, causal, across, dedup,
               dropout_p, acc, heads_last) -> _Plan:
    """Sort every round by (bucket, position) and precompute the gather indices and key codes of the chunks.

    ``pad_bucket``: the bucket of padding positions when the buckets were hashed here (then a slot is real
    iff its bucket is smaller), ``None`` for replayed buckets (real-ness comes from ``padding_mask``).
    """
    dev = buckets.device
    _, _, r, n_pad = buckets.shape
    n_chunks = n_pad // bs
    kk = before + 1 + after
    bh = b * h
    m_total = bh * r * n_chunks
    slots = m_total * bs
    key = torch.add(torch.arange(n_pad, device=dev), buckets.reshape(bh, r, n_pad), alpha=n_pad)
    sorted_key, sorted_pos = torch.sort(key, dim=-1)  # keys are unique: sorted by (bucket, position)
    head = torch.arange(bh, device=dev).view(bh, 1, 1)
    # rows of the packed (B*H*N, 3*Dh) inputs: `before` filler chunks, the sorted slots, `after` filler chunks
    rows_ext = torch.empty((m_total + kk - 1) * bs, dtype=torch.long, device=dev)
    rows_ext[:before * bs] = 0
    rows_ext[before * bs + slots:] = 0
    rows_q = rows_ext[before * bs:before * bs + slots]
    spos = sorted_pos.clamp(max=n - 1) if n_pad > n else sorted_pos
    if heads_last:  # row (b, position, h)
        torch.add((head // h) * (n * h) + head % h, spos, alpha=h, out=rows_q.view(bh, r, n_pad))
    else:  # row (b, h, position)
        torch.add(head * n, spos, out=rows_q.view(bh, r, n_pad))
    base = (head * r + torch.arange(r, device=dev).view(1, r, 1)) * n_pad  # first slot of each (head, round)
    posidx = torch.add(sorted_pos, base).view(-1)  # slot -> (head, round, position)
    undo_full = torch.empty(r, bh, n_pad, dtype=torch.long, device=dev)  # (round, head, position) -> slot
    undo_full.permute(1, 0, 2).scatter_(2, sorted_pos, torch.arange(slots, device=dev).view(bh, r, n_pad))
    if heads_last:
        undo = undo_full.view(r, b, h, n_pad)[..., :n].transpose(2, 3).reshape(r, bh * n)
    else:
        undo = undo_full[..., :n].reshape(r, bh * n)

    # is the key in each slot a real token?  (None: all are)
    if padding_mask is None and n_pad == n:
        s_real = None
    elif padding_mask is None:
        s_real = sorted_pos < n
    elif pad_bucket is not None:
        s_real = sorted_key < pad_bucket * n_pad
    else:
        real = torch.nn.functional.pad(padding_mask, (0, n_pad - n), value=False)
        s_real = real.repeat_interleave(h * r, dim=0).view(bh, r, n_pad).gather(2, sorted_pos)
    chunk = torch.arange(m_total, device=dev) % n_chunks
    offs = torch.arange(-before, after + 1, device=dev)
    outside = ((chunk[:, None] + offs) < 0) | ((chunk[:, None] + offs) >= n_chunks)  # (M, K): another round's chunk
    mode, lo, hi, kcode = _key_codes(sorted_key, sorted_pos, s_real, outside, causal=causal, across=across,
                                     before=before, bs=bs)
    plan = _Plan(b=b, h=h, n=n, dh=dh, bs=bs, n_chunks=n_chunks, n_pad=n_pad, n_hashes=r, before=before,
                 after=after, mode=mode, scale=softmax_scale(dh), acc=acc, fill=neg_inf(acc),
                 dropout_p=dropout_p, rows_q=rows_q, rows_ext=rows_ext, kcode=kcode,
                 lo=lo.reshape(m_total, bs) if lo is not None else None,
                 hi=hi.reshape(m_total, bs) if hi is not None else None, undo=undo, posidx=posidx,
                 heads_last=heads_last)
    if dedup:
        plan.logc = _dup_counts(plan, buckets, sorted_pos, undo_full, across)
    return plan


def _key_codes(sorted_key, sorted_pos, s_real, outside, *, causal, across, before, bs):
    """(mode, lo, hi, kcode) for :func:`_disallowed`: an integer code per key slot of every chunk's window
    (M, K*bs), with a sentinel for padding keys and for neighbours outside the round (``outside``, (M, K))."""
    bh, r, n_pad = sorted_pos.shape
    m_total, kk = outside.shape
    slots = bh * r * n_pad
    if s_real is None and not causal and across:  # only the window edges are masked
        return "col", None, None, outside.repeat_interleave(bs, dim=1)
    lo = hi = None
    code_ext = torch.empty((m_total + kk - 1) * bs, dtype=torch.bool if (not causal and across) else torch.long,
                           device=sorted_pos.device)
    code = code_ext[before * bs:before * bs + slots].view(bh, r, n_pad)
    def put(value, invalid):  # the code of every real key; `invalid` for padding keys
        if s_real is None:
            code.copy_(value)
        else:
            torch.where(s_real, value, code.new_tensor(invalid), out=code)
        return invalid

    if not causal and across:  # masked iff the key is padding
        mode, invalid = "col", True
        torch.logical_not(s_real, out=code)
    elif causal and across:  # masked iff key position >= query position
        mode, invalid = "causal", put(sorted_pos, torch.iinfo(torch.long).max)
        hi = sorted_pos
    elif not causal:  # masked iff key bucket != query bucket
        lo = torch.div(sorted_key, n_pad, rounding_mode="floor")
        mode, invalid = "bucket", put(lo, -1)
    else:  # masked unless bucket * n_pad <= key code (= bucket * n_pad + position) < query code
        mode, invalid = "bucket_causal", put(sorted_key, -1)
        lo, hi = sorted_key - sorted_pos, sorted_key
    code_ext[:before * bs] = invalid
    code_ext[before * bs + slots:] = invalid
    kcode = code_ext.as_strided((m_total, kk * bs), (bs, 1)).clone()
    if bool(outside.any()):
        kcode.view(m_total, kk, bs).masked_fill_(outside[:, :, None], invalid)
    return mode, lo, hi, kcode


def _dup_counts(plan: _Plan, buckets, sorted_pos, undo_full, across: bool) -> _DupCounts:
    """Per-round chunk (and bucket) of every slot, and how many rounds each query attends only itself."""
    dev = sorted_pos.device
    bh, r, n_pad, bs, kk, m_total = plan.b * plan.h, plan.n_hashes, plan.n_pad, plan.bs, plan.k, plan.m
    # chunk of each (head, position) in every round, rows head * n_pad + position
    chunk_t = ((undo_full % n_pad) // bs).permute(1, 2, 0).reshape(bh * n_pad, r).to(torch.int32)
    gidx = (torch.arange(bh, device=dev).view(bh, 1, 1) * n_pad + sorted_pos).view(-1)  # slot -> (head, position)
    gidx_ext = torch.cat([gidx.new_zeros(plan.before * bs), gidx, gidx.new_zeros(plan.after * bs)])
    qch = chunk_t[gidx].view(m_total, bs, r)
    kch = chunk_t[gidx_ext].as_strided((m_total, kk * bs, r), (bs * r, r, 1)).clone()
    qbk = kbk = None
    if not across:
        bucket_t = buckets.reshape(bh, r, n_pad).permute(0, 2, 1).reshape(bh * n_pad, r)
        qbk = bucket_t[gidx].view(m_total, bs, r)
        kbk = bucket_t[gidx_ext].as_strided((m_total, kk * bs, r), (bs * r, r, 1)).clone()
    d = _DupCounts(qch=qch, kch=kch, qbk=qbk, kbk=kbk)
    # rounds in which a query has no other target (mask-only pass)
    g_max = plan.block()
    maskbuf = torch.empty(g_max, bs, kk * bs, dtype=torch.bool, device=dev)
    maskbuf2 = torch.empty_like(maskbuf)
    alone = torch.empty(m_total, bs, dtype=torch.bool, device=dev)
    for m0 in range(0, m_total, g_max):
        m1 = min(m0 + g_max, m_total)
        dis = _disallowed(plan, m0, m1, maskbuf[:m1 - m0], maskbuf2[:m1 - m0])
        dis = dis.expand(m1 - m0, bs, kk * bs).clone() if dis.data_ptr() != maskbuf.data_ptr() else dis
        dis[:, :, plan.before * bs:(plan.before + 1) * bs].diagonal(dim1=1, dim2=2).fill_(True)
        torch.all(dis, dim=-1, out=alone[m0:m1])
    alone_pos = torch.zeros(bh * r * n_pad, dtype=torch.int32, device=dev)
    alone_pos[plan.posidx] = alone.view(-1).to(torch.int32)
    d.self_count = alone_pos.view(bh, r, n_pad).sum(dim=1, dtype=torch.int32).view(-1)[gidx].view(m_total, bs)
    return d


# ------------------------------------------------------------------------------------------ attended pairs
def lsh_pairs(buckets: torch.Tensor, *, bucket_size: int, n: int, padding_mask: torch.Tensor | None = None,
              n_chunks_before: int = 1, n_chunks_after: int = 0, causal: bool = False,
              attend_across_buckets: bool = True) -> torch.Tensor:
    """Which keys each query attends in each hash round of :func:`lsh_attention`, from the kernel's own sort plan
    and chunk masks on the given buckets.

    In round ``r`` positions are sorted by (bucket, position) and cut into chunks of ``bucket_size``; a query
    attends the keys of its chunk and of ``n_chunks_before`` previous / ``n_chunks_after`` next chunks of the
    same round that pass the masks (real; ``j < i`` if ``causal``; same bucket unless ``attend_across_buckets``),
    never itself unless it has no other target (Kitaev et al. 2020, section 2, "Shared-QK attention").
    ``allow_duplicate_attention`` does not change the pairs (only their weights).

    Args:
        buckets: (B, H, R, N_pad) int buckets, as returned by ``lsh_attention(..., return_buckets=True)`` or kept
            by :class:`LSHAttention` (``keep_buckets``); N_pad = N rounded up to a multiple of ``bucket_size``.
        bucket_size / n_chunks_before / n_chunks_after / causal / attend_across_buckets: as in
            :func:`lsh_attention`.
        n: sequence length N.
        padding_mask: (B, N) bool, True for real tokens, or None.

    Returns:
        (B, H, R, N, N) bool, row = query, column = key; rows of padding queries are False. Memory O(B H R N^2).

    Raises:
        ValueError: ``buckets`` not 4-D or its last dim not N rounded up to ``bucket_size``; bad options.
    """
    if buckets.dim() != 4:
        raise ValueError(f"buckets must be (B, H, R, N_pad), got shape {tuple(buckets.shape)}")
    b, h, r, n_pad = buckets.shape
    bs = int(bucket_size)
    if bs <= 0 or n_pad != -(-n // bs) * bs:
        raise ValueError(f"buckets' last dim {n_pad} is not n={n} rounded up to bucket_size={bucket_size}")
    before, after = _check_chunks("n_chunks_before", n_chunks_before), _check_chunks("n_chunks_after", n_chunks_after)
    if padding_mask is not None and bool(padding_mask.all()):
        padding_mask = None  # as the kernel does
    plan = _make_plan(buckets.long(), padding_mask, None, b=b, h=h, n=n, dh=1, bs=bs, before=before, after=after,
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
    return out.contiguous() if padding_mask is None else out & padding_mask[:, None, None, :, None]


# ------------------------------------------------------------------------------------------------ module
def _compact_buckets(buckets: torch.Tensor) -> torch.Tensor:
    """The same bucket ids in the narrowest of int16 / int32 / int64 that holds them."""
    lo, hi = (int(buckets.min()), int(buckets.max())) if buckets.numel() else (0, 0)
    for dtype in (torch.int16, torch.int32):
        if torch.iinfo(dtype).min <= lo and hi <= torch.iinfo(dtype).max:
            return buckets.to(dtype)
    return buckets


class LSHAttention(MultiHeadProjection):
    """Multi-head Reformer LSH attention on (B, N, D) hidden states (Kitaev et al. 2020, section 2).

    Args:
        d_model: model width D; n_heads: heads H (must divide D).
        n_hashes: hash rounds. bucket_size: chunk length.
        n_buckets: ``None`` (automatic, see :func:`default_n_buckets`), an even int, or a list of even
            factors such as ``[16, 32]`` (factorised hashing).
        dropout: attention-probability dropout. causal: autoregressive mask.
        seed: fixed hashing seed (``None``: fresh rotations each call from torch's global RNG, so
            ``seed_everything`` makes a run reproducible).
        bias: biases of the input/output projections.
        attend_across_buckets, allow_duplicate_attention, random_rotations_per_head, n_chunks_before,
            n_chunks_after: see :func:`lsh_attention`.

    ``forward(hidden (B, N, D), padding_mask (B, N) bool = None, global_attention_mask = None) -> (B, N, D)``
    in ``hidden``'s dtype (or autocast's). ``global_attention_mask`` is accepted for a uniform block
    signature and ignored. Every call draws exactly one value from torch's global RNG for the hashing seed,
    also when buckets are replayed (plus the attention-dropout draws when dropout is on), so dropout
    replays exactly in reversible layers.

    Introspection: with ``keep_buckets = True`` every forward stores the (B, H, n_hashes, N_pad) int64 buckets it
    used in ``last_buckets``; :meth:`attended_pairs`, :meth:`values_map` and :meth:`attention_probabilities`
    replay them (or buckets passed explicitly).

    Raises:
        ValueError: non-positive ``n_hashes`` / ``bucket_size``, odd ``n_buckets`` (or factor), negative
            ``n_chunks_before`` / ``n_chunks_after``, ``n_heads`` not dividing ``d_model``.
    """

    def __init__(self, d_model: int, n_heads: int, n_hashes: int = 2, bucket_size: int = 64,
                 n_buckets: int | Sequence[int] | None = None, dropout: float = 0.0, causal: bool = False,
                 seed: int | None = None, bias: bool = True, attend_across_buckets: bool = True,
                 allow_duplicate_attention: bool = True, random_rotations_per_head: bool = False,
                 n_chunks_before: int = 1, n_chunks_after: int = 0):
        super().__init__(d_model, n_heads, n_inputs=2, dropout=dropout, bias=bias)
        self.n_hashes = check_positive_int("attention.n_hashes", n_hashes)
        self.bucket_size = check_positive_int("attention.bucket_size", bucket_size)
        if n_buckets is not None:
            n_buckets = _check_n_buckets(n_buckets)
            n_buckets = list(n_buckets) if isinstance(n_buckets, tuple) else n_buckets
        self.n_buckets, self.causal, self.seed = n_buckets, causal, seed
        self.attend_across_buckets = bool(attend_across_buckets)
        self.allow_duplicate_attention = bool(allow_duplicate_attention)
        self.random_rotations_per_head = bool(random_rotations_per_head)
        self.n_chunks_before = _check_chunks("n_chunks_before", n_chunks_before)
        self.n_chunks_after = _check_chunks("n_chunks_after", n_chunks_after)
        # reversible layers: "record" keeps the buckets of a forward pass, "replay" reuses them (LIFO)
        self.bucket_mode: str | None = None
        self._saved_buckets: list[torch.Tensor] = []
        # introspection: with keep_buckets, every forward stores the buckets it used in last_buckets
        self.keep_buckets: bool = False
        self.last_buckets: torch.Tensor | None = None

    def forward(self, hidden, padding_mask=None, global_attention_mask=None):
        qkv = self.project_fused(hidden)  # (B, N, 2, H, Dh): the kernel reads it in (batch, position, head) order
        return self.merge(self._attend(qkv, padding_mask))

    @torch.compiler.disable
    def _attend(self, qkv, padding_mask):
        """Hashing, sort plan and kernel on the fused projection -> (B, H, N, Dh); run eagerly under
        ``torch.compile`` (the RNG draw, bucket record / replay and custom autograd function stay out of the
        compiled graphs)."""
        qk, v = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
        # One draw from torch's global RNG per call seeds the rotations: the RNG is consumed the same way
        # whether buckets are hashed or replayed, so dropout after this layer replays exactly.
        seed = self.seed if self.seed is not None else int(torch.randint(0, 2**62, (1,)))
        buckets = self._saved_buckets.pop().long() if self.bucket_mode == "replay" else None
        out, buckets = _lsh_attention(
            qk, v, qkv,
            n_hashes=self.n_hashes, bucket_size=self.bucket_size, n_buckets=self.n_buckets,
            padding_mask=padding_mask, seed=seed, causal=self.causal, dropout_p=self.attn_dropout,
            buckets=buckets, return_buckets=True,
            attend_across_buckets=self.attend_across_buckets,
            allow_duplicate_attention=self.allow_duplicate_attention,
            random_rotations_per_head=self.random_rotations_per_head,
            n_chunks_before=self.n_chunks_before, n_chunks_after=self.n_chunks_after,
        )
        if self.bucket_mode == "record":
            # kept from the forward to the backward of every layer, so stored compactly: int16 (int32 past
            # 32767 buckets) is a quarter (half) of int64: 128 KiB instead of 512 KiB per layer at N=8192,
            # 4 heads, 2 hashes
            self._saved_buckets.append(_compact_buckets(buckets))
        if self.keep_buckets:
            self.last_buckets = buckets
        return out

    def _buckets(self, buckets: torch.Tensor | None) -> torch.Tensor:
        if buckets is None:
            buckets = self.last_buckets
        if buckets is None:
            raise ValueError("LSHAttention: no buckets given and none kept: pass buckets=(B, H, n_hashes, N_pad), or "
                             "set keep_buckets=True before the forward pass whose buckets to use")
        return buckets

    def attended_pairs(self, padding_mask=None, global_attention_mask=None, *, seq_len=None, buckets=None,
                       per_round=False):
        """Which keys each query attends, from the buckets the layer used: its sort plan and chunk masks
        (:func:`lsh_pairs` with this layer's bucket size, neighbouring chunks, causality and bucket masking).

        Args:
            padding_mask: (B, N) bool or None (then ``seq_len`` gives N). global_attention_mask: ignored.
            seq_len: N when ``padding_mask`` is None.
            buckets: (B, H, n_hashes, N_pad) int; default :attr:`last_buckets` (kept by the last forward pass
                run with ``keep_buckets = True``).
            per_round: return every hash round separately.

        Returns:
            (B, H, N, N) bool (attended in at least one round), or with ``per_round`` (B, H, R, N, N) bool;
            row = query, column = key; rows of padding queries are False.

        Raises:
            ValueError: no buckets given or kept; neither ``padding_mask`` nor ``seq_len``; buckets of the wrong
                shape.
        """
        buckets = self._buckets(buckets)
        n = padding_mask.shape[1] if padding_mask is not None else seq_len
        if n is None:
            raise ValueError("LSHAttention.attended_pairs needs padding_mask or seq_len")
        pairs = lsh_pairs(buckets, bucket_size=self.bucket_size, n=int(n), padding_mask=padding_mask,
                          n_chunks_before=self.n_chunks_before, n_chunks_after=self.n_chunks_after,
                          causal=self.causal, attend_across_buckets=self.attend_across_buckets)
        return pairs if per_round else pairs.any(dim=2)

    def values_map(self, hidden, padding_mask=None, global_attention_mask=None, *, buckets=None):
        """``f(v (B, H, N, Dh)) -> (B, H, N, Dh)``: :func:`lsh_attention` with this layer's shared query/key of
        ``hidden`` (B, N, D) and settings, replaying ``buckets`` (default :attr:`last_buckets`), no dropout.

        Raises:
            ValueError: no buckets given or kept.
        """
        buckets = self._buckets(buckets)
        qk, _ = self.project(hidden)
        return lambda v: lsh_attention(
            qk, v, n_hashes=self.n_hashes, bucket_size=self.bucket_size, padding_mask=padding_mask,
            buckets=buckets.long(), causal=self.causal, dropout_p=0.0,
            attend_across_buckets=self.attend_across_buckets,
            allow_duplicate_attention=self.allow_duplicate_attention, n_chunks_before=self.n_chunks_before,
            n_chunks_after=self.n_chunks_after)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", n_hashes={self.n_hashes}, bucket_size={self.bucket_size}, "
                f"n_buckets={self.n_buckets}, causal={self.causal}, n_chunks_before={self.n_chunks_before}, "
                f"n_chunks_after={self.n_chunks_after}")
