"""Reformer LSH attention options against an independent dense reference.

The reference rebuilds every hash round's attention pattern in plain Python from the buckets the kernel
returns (sort by (bucket, position), cut into chunks, look ``before`` chunks back and ``after`` ahead in
the same round), then runs a plain masked softmax per round and combines the rounds by their
log-sum-exp (Kitaev et al. 2020, section 2, eq. (6)-(7)).
"""

import contextlib
import functools
import math

import pytest
import torch
import torch.nn.functional as F

import longdoc.attention.lsh as lsh_module
from longdoc.attention import LSHAttention, default_n_buckets, hash_buckets, lsh_attention
from longdoc.attention.lsh import random_rotations
from tests.reference import lsh_round_masks

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def _qkv(seed, b, h, n, d, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, n, d, generator=g, dtype=dtype), torch.randn(b, h, n, d, generator=g, dtype=dtype)


def _reference(qk, v, masks, dedup=False):
    """Plain masked softmax per round; rounds combined by softmax of their log-sum-exp."""
    s = qk @ F.normalize(qk, dim=-1).transpose(-1, -2) / math.sqrt(qk.shape[-1])
    if dedup:  # a key attended in c rounds contributes exp(s) / c per round: once in total
        s = s - masks.sum(0).clamp(min=1).to(s.dtype).log()
    outs, lses = [], []
    for m in masks:
        sr = s.masked_fill(~m, float("-inf"))
        lses.append(torch.logsumexp(sr, dim=-1))
        outs.append(torch.softmax(sr, dim=-1) @ v)
    w = torch.softmax(torch.stack(lses), dim=0)
    return (torch.stack(outs) * w[..., None]).sum(0)


CASES = {
    "default": {},
    "within_buckets": {"attend_across_buckets": False},
    "no_duplicates": {"allow_duplicate_attention": False},
    "two_back_one_ahead": {"n_chunks_before": 2, "n_chunks_after": 1},
    "own_chunk_only": {"n_chunks_before": 0, "n_chunks_after": 0},
    "causal": {"causal": True},
    "causal_within_no_dup_ahead": {"causal": True, "attend_across_buckets": False,
                                   "allow_duplicate_attention": False, "n_chunks_after": 1},
    "factorised": {"n_buckets": [4, 6]},
    "rotation_per_head": {"random_rotations_per_head": True},
}


class _ManyBlocks:
    """Tiny score tiles: the kernel runs in 7 blocks of chunks (block edges inside rounds, a short last block)."""

    def __enter__(self):
        self.saved = lsh_module._MIN_TILE, lsh_module._BLOCKS
        lsh_module._MIN_TILE, lsh_module._BLOCKS = 1, 7

    def __exit__(self, *exc):
        lsh_module._MIN_TILE, lsh_module._BLOCKS = self.saved


class _Recompute(_ManyBlocks):
    """Many blocks, and no probability tile kept for backward: the backward recomputes each one."""

    def __enter__(self):
        super().__enter__()
        self.saved_store = lsh_module._STORE_PROBS_MAX
        lsh_module._STORE_PROBS_MAX = 0

    def __exit__(self, *exc):
        lsh_module._STORE_PROBS_MAX = self.saved_store
        super().__exit__(*exc)


def _blocks(blocks):
    return {"many": _ManyBlocks, "recompute": _Recompute}.get(blocks, contextlib.nullcontext)()


def _run_case(kw, dtype, requires_grad=False):
    b, h, n, d, bs = 2, 2, 45, 6, 8  # 45 is not a multiple of 8: three padding slots at the end
    qk, v = _qkv(7, b, h, n, d, dtype)
    qk.requires_grad_(requires_grad)
    v.requires_grad_(requires_grad)
    pm = torch.ones(b, n, dtype=torch.bool)
    pm[1, 30:] = False
    kw = dict(kw)
    kw.setdefault("n_buckets", 6)
    out, buckets = lsh_attention(qk, v, n_hashes=3, bucket_size=bs, padding_mask=pm, seed=2, return_buckets=True, **kw)
    masks = lsh_round_masks(buckets, n, bs, pm.tolist(), before=kw.get("n_chunks_before", 1),
                         after=kw.get("n_chunks_after", 0), causal=kw.get("causal", False),
                         across=kw.get("attend_across_buckets", True))
    ref = _reference(qk, v, masks, dedup=not kw.get("allow_duplicate_attention", True))
    return qk, v, pm, out, ref, masks, buckets


@functools.lru_cache(maxsize=None)
def _case(name, dtype=torch.float64, blocks="one"):
    with _blocks(blocks):
        return _run_case(CASES[name], dtype)


@pytest.mark.parametrize("dtype,blocks", [(torch.float32, "one"), (torch.float64, "one"), (torch.float64, "many")])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_dense_reference_from_buckets(case, dtype, blocks):
    _, _, pm, out, ref, masks, buckets = _case(case, dtype, blocks)
    real = pm[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], ref[real], atol=TOL[dtype], rtol=TOL[dtype])
    assert buckets.shape == (2, 2, 3, 48)
    assert masks.any(-1).all()  # every query attends something in every round


@pytest.mark.parametrize("blocks", ["one", "many", "recompute"])
@pytest.mark.parametrize("case", list(CASES))
def test_gradients_match_dense_reference(case, blocks):
    with _blocks(blocks):
        qk, v, pm, out, ref, _, _ = _run_case(CASES[case], torch.float64, requires_grad=True)
    w = torch.sin(torch.arange(out.numel(), dtype=out.dtype)).view_as(out) * pm[:, None, :, None]
    with _blocks(blocks):
        got = torch.autograd.grad((out * w).sum(), (qk, v))
    want = torch.autograd.grad((ref * w).sum(), (qk, v))
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e, atol=1e-10, rtol=1e-10)


def test_probability_tiles_are_kept_only_below_the_threshold():
    """Above _STORE_PROBS_MAX elements the forward keeps no tile (the backward recomputes them, tested above)."""
    qk, v = _qkv(3, 1, 2, 40, 4)
    kept = {}
    real_forward = lsh_module._forward

    def spy(src, plan, keep):
        res = real_forward(src, plan, keep)
        kept[lsh_module._STORE_PROBS_MAX] = res[1] is not None
        return res

    for limit in (0, 1 << 20):
        saved = lsh_module._STORE_PROBS_MAX
        lsh_module._STORE_PROBS_MAX, lsh_module._forward = limit, spy
        try:
            lsh_attention(qk.requires_grad_(), v, n_hashes=2, bucket_size=8, seed=0).sum().backward()
        finally:
            lsh_module._STORE_PROBS_MAX, lsh_module._forward = saved, real_forward
    assert kept == {0: False, 1 << 20: True}


def test_options_change_the_pattern():
    """Each option really changes which keys are attended (so the reference comparisons are not vacuous)."""
    base = _case("default")
    for case in ("within_buckets", "no_duplicates", "two_back_one_ahead", "own_chunk_only", "causal"):
        other = _case(case)
        assert not torch.allclose(other[3], base[3]), case
        if case != "no_duplicates":
            assert not torch.equal(other[5], base[5]), case
    # duplicates really occur with three rounds; within buckets, the other keys are a subset of the default's
    assert (base[5].sum(0) > 1).any()
    others = ~torch.eye(45, dtype=torch.bool)
    assert not (_case("within_buckets")[5] & ~base[5] & others).any()


def test_causal_never_sees_the_future():
    b, h, n, d, bs = 1, 2, 37, 8, 4
    qk, v = _qkv(3, b, h, n, d)
    out, buckets = lsh_attention(qk, v, n_hashes=2, bucket_size=bs, causal=True, seed=1, n_chunks_after=2,
                                 return_buckets=True)
    torch.testing.assert_close(out[:, :, 0], v[:, :, 0], atol=1e-12, rtol=0)  # position 0 attends itself only
    t = 20  # change everything after position t, replaying the same buckets: outputs up to t are unchanged
    qk2, v2 = qk.clone(), v.clone()
    qk2[:, :, t + 1:] = 5 * torch.randn_like(qk2[:, :, t + 1:])
    v2[:, :, t + 1:] = 5 * torch.randn_like(v2[:, :, t + 1:])
    out2 = lsh_attention(qk2, v2, n_hashes=2, bucket_size=bs, causal=True, buckets=buckets, n_chunks_after=2)
    torch.testing.assert_close(out2[:, :, :t + 1], out[:, :, :t + 1], atol=1e-12, rtol=0)
    assert not torch.allclose(out2[:, :, t + 1:], out[:, :, t + 1:])
    full = lsh_attention(qk2, v2, n_hashes=2, bucket_size=bs, causal=False, buckets=buckets, n_chunks_after=2)
    assert not torch.allclose(full[:, :, :t + 1], out[:, :, :t + 1])  # without causal the future leaks in


def test_factorised_hash_is_b1_plus_n1_b2_of_per_factor_argmaxes():
    x = torch.randn(2, 3, 40, 8, dtype=torch.float64)
    rot = torch.randn(8, 2, 2 + 3, dtype=torch.float64)  # factors [4, 6]: 4/2 + 6/2 columns
    got = hash_buckets(x, n_hashes=2, n_buckets=[4, 6], rotations=rot)
    xr = torch.einsum("bhnd,dkr->bhknr", x, rot)
    b1 = torch.cat([xr[..., :2], -xr[..., :2]], -1).argmax(-1)
    b2 = torch.cat([xr[..., 2:], -xr[..., 2:]], -1).argmax(-1)
    assert torch.equal(got, b1 + 4 * b2)
    assert int(got.min()) >= 0 and int(got.max()) < 24 and got.unique().numel() > 12
    flipped = hash_buckets(-x, n_hashes=2, n_buckets=[4, 6], rotations=rot)  # -x flips every factor
    assert torch.equal(flipped, (b1 + 2) % 4 + 4 * ((b2 + 3) % 6))
    seeded = hash_buckets(x, n_hashes=2, n_buckets=[4, 6], seed=5)
    assert torch.equal(seeded, hash_buckets(x, n_hashes=2, n_buckets=[4, 6],
                                            rotations=random_rotations(8, 2, [4, 6], seed=5)))


def test_automatic_bucket_count_factorises_like_huggingface():
    assert default_n_buckets(4096, 64) == 128  # 2 * 64 chunks = HF's limit 2 * max(sqrt(64), 64)
    assert default_n_buckets(8192, 64) == [16, 16]
    assert default_n_buckets(16384, 64) == [16, 32]
    assert default_n_buckets(48, 8) == 12  # small: Reformer's 2 * ceil(N / bucket_size), not a power of two
    assert default_n_buckets(200, 4) == [8, 16]  # 100 buckets > 2 * max(isqrt(50), 4): round up to 128
    qk, v = _qkv(4, 1, 2, 197, 4)
    pm = torch.ones(1, 197, dtype=torch.bool)
    pm[0, 190:] = False
    out, buckets = lsh_attention(qk, v, n_hashes=2, bucket_size=4, padding_mask=pm, seed=0, return_buckets=True)
    assert int(buckets[..., :190].max()) < 128 and buckets[..., :190].unique().numel() > 64
    assert (buckets[..., 190:] == 128).all()  # padding (and the tail up to 200) in an extra last bucket
    masks = lsh_round_masks(buckets, 197, 4, pm.tolist())
    ref = _reference(qk, v, masks)
    torch.testing.assert_close(out[:, :, :190], ref[:, :, :190], atol=1e-10, rtol=1e-10)


def test_rotations_shared_or_per_head():
    x = torch.randn(1, 1, 50, 8, dtype=torch.float64).expand(1, 4, 50, 8)  # four identical heads
    shared = hash_buckets(x, n_hashes=2, n_buckets=8, seed=3)
    per_head = hash_buckets(x, n_hashes=2, n_buckets=8, seed=3, random_rotations_per_head=True)
    assert all(torch.equal(shared[:, 0], shared[:, i]) for i in range(4))
    assert not all(torch.equal(per_head[:, 0], per_head[:, i]) for i in range(4))
    assert random_rotations(8, 2, 8, seed=3).shape == (8, 2, 4)
    assert random_rotations(8, 2, 8, n_heads=4, seed=3).shape == (4, 8, 2, 4)
    rot = random_rotations(8, 2, 8, n_heads=4, seed=3)
    assert torch.equal(per_head, hash_buckets(x, n_hashes=2, n_buckets=8, rotations=rot))
    # the attention uses exactly these buckets (positions past N go to the extra bucket 8)
    _, used = lsh_attention(x.contiguous(), x.contiguous(), n_hashes=2, bucket_size=8, n_buckets=8, seed=3,
                            return_buckets=True)
    assert torch.equal(used[..., :50], shared) and (used[..., 50:] == 8).all()


@pytest.mark.parametrize("blocks", ["one", "many", "recompute"])
def test_dropout_gradients_are_exact(blocks):
    qk, v = _qkv(5, 1, 2, 11, 3)
    pm = torch.ones(1, 11, dtype=torch.bool)
    pm[0, 9:] = False

    def f(a, b):
        torch.manual_seed(0)  # the same dropout mask at every evaluation
        return lsh_attention(a, b, n_hashes=2, bucket_size=4, n_buckets=4, seed=1, dropout_p=0.3, padding_mask=pm,
                             allow_duplicate_attention=False, n_chunks_after=1)

    with _blocks(blocks):
        assert torch.autograd.gradcheck(f, (qk.requires_grad_(), v.requires_grad_()), atol=1e-8, fast_mode=True)
    no_drop = lsh_attention(qk, v, n_hashes=2, bucket_size=4, n_buckets=4, seed=1, padding_mask=pm,
                            allow_duplicate_attention=False, n_chunks_after=1)
    assert not torch.allclose(f(qk, v), no_drop)


@pytest.mark.parametrize("causal", [False, True])
def test_bf16_autocast_is_finite_with_empty_and_self_only_rows(causal):
    torch.manual_seed(0)
    attn = LSHAttention(16, 2, n_hashes=2, bucket_size=4, causal=causal, allow_duplicate_attention=False,
                        attend_across_buckets=False)
    x = torch.randn(3, 10, 16, requires_grad=True)
    pm = torch.ones(3, 10, dtype=torch.bool)
    pm[1, 1:] = False  # the only real token's only target is itself
    pm[2] = False  # a fully padded row
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x, pm)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    out.float().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[0].abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())
    # the lone token attends only itself: its attention output is its own value projection
    qk, v = attn.project(x[1:2].detach())
    alone = lsh_attention(qk, v, n_hashes=2, bucket_size=4, padding_mask=pm[1:2], seed=0, causal=causal)
    torch.testing.assert_close(alone[0, :, 0], v[0, :, 0], atol=1e-6, rtol=1e-6)


def test_module_passes_options_to_the_function():
    torch.manual_seed(0)
    kw = dict(n_hashes=2, bucket_size=4, n_buckets=[2, 4], causal=True, attend_across_buckets=False,
              allow_duplicate_attention=False, random_rotations_per_head=True, n_chunks_before=2, n_chunks_after=1)
    attn = LSHAttention(8, 2, seed=4, **kw).double()
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    qk, v = attn.project(x)
    fn_kw = {k: v for k, v in kw.items() if k not in ("n_hashes", "bucket_size")}
    want = attn.merge(lsh_attention(qk, v, n_hashes=2, bucket_size=4, seed=4, **fn_kw))
    torch.testing.assert_close(attn(x), want, atol=0, rtol=0)
    assert "n_chunks_before=2" in repr(attn)


@pytest.mark.parametrize("kw,match", [
    ({"n_chunks_before": -1}, r"attention.n_chunks_before must be an integer >= 0, got -1"),
    ({"n_chunks_after": 1.5}, r"attention.n_chunks_after must be an integer >= 0, got 1.5"),
    ({"n_buckets": [4, 3]}, r"attention.n_buckets must be an even integer >= 2 or a list of them"),
    ({"n_buckets": 5}, r"attention.n_buckets must be an even integer >= 2"),
    ({"dropout_p": 1.0}, r"dropout must be in \[0, 1\)"),
])
def test_argument_errors_name_the_key(kw, match):
    qk, v = _qkv(0, 1, 1, 8, 4)
    with pytest.raises(ValueError, match=match):
        lsh_attention(qk, v, n_hashes=1, bucket_size=4, **kw)
    if "dropout_p" not in kw:
        with pytest.raises(ValueError, match=match):
            LSHAttention(8, 2, bucket_size=4, **kw)
    with pytest.raises(ValueError, match="rotations must have shape"):
        hash_buckets(qk, n_hashes=1, n_buckets=4, rotations=torch.randn(4, 1, 3))


def test_recorded_buckets_are_stored_compactly_and_replay_exactly():
    """Reversible layers keep each layer's buckets from forward to backward: int16 storage (a quarter of int64),
    and replaying them under another RNG state gives the recorded forward's output bit for bit."""
    attn = LSHAttention(d_model=16, n_heads=2, bucket_size=4, n_hashes=2).eval()
    x = torch.randn(2, 19, 16)
    attn.bucket_mode = "record"
    torch.manual_seed(0)
    recorded = attn(x)
    assert attn._saved_buckets[0].dtype == torch.int16 and attn._saved_buckets[0].shape[:3] == (2, 2, 2)
    attn.bucket_mode = None
    torch.manual_seed(1)
    fresh = attn(x)  # other rotations: other buckets
    assert not torch.equal(fresh, recorded)
    attn.bucket_mode = "replay"
    torch.manual_seed(1)
    torch.testing.assert_close(attn(x), recorded, rtol=0, atol=0)
    assert attn._saved_buckets == []
