"""Causal, dilated, separately projected and flex-backed Longformer attention against dense references.

Every reference is a plain masked softmax (tests.reference.dense_attention) with a boolean N x N mask built
here by index arithmetic from the rule each feature defines (Beltagy et al. 2020, section 3.1).
"""

import pytest
import torch

from longdoc.attention import LocalGlobalAttention, local_global_attention
from longdoc.attention import local_global as lg
from tests.reference import dense_attention

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def feature_mask(n, window, global_mask, padding_mask, *, causal=False, dilation=1):
    """Query i attends key j iff key j real, (j <= i if causal), and (i global or j global or
    (|i - j| <= window * dilation and (i - j) % dilation == 0))."""
    i = torch.arange(n)
    diff = i[:, None] - i[None, :]
    band = (diff.abs() <= window * dilation) & (diff % dilation == 0)
    g = global_mask & padding_mask
    m = band[None] | g[:, :, None] | g[:, None, :]
    if causal:
        m = m & (diff >= 0)[None]
    return m & padding_mask[:, None, :]


def _inputs(seed, b, h, n, d, dtype, n_global, pad, grad=False):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=g, dtype=dtype, requires_grad=grad) for _ in range(3))
    pm = torch.ones(b, n, dtype=torch.bool)
    gm = torch.zeros(b, n, dtype=torch.bool)
    for i in range(b):
        if i:
            pm[i, n - int(torch.randint(1, pad + 1, (1,), generator=g)):] = False
        gm[i, torch.randperm(n, generator=g)[:n_global]] = True  # some may fall on padding: ignored
    return q, k, v, pm, gm


def _check_rows(out, ref, pm, tol):
    real = pm[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], ref[real], atol=tol, rtol=tol)


CASES = [  # (n, window, dilation, n_global): lengths not multiples of any window, dilation or block
    (37, 4, 1, 3), (53, 3, 2, 2), (100, 7, 3, 5), (67, 5, 4, 0), (29, 40, 2, 1),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n,window,dilation,n_global", CASES)
def test_causal_and_dilation_match_dense(dtype, causal, n, window, dilation, n_global):
    q, k, v, pm, gm = _inputs(n * dilation + window, 2, 2, n, 8, dtype, n_global, pad=n // 3)
    out = local_global_attention(q, k, v, attention_window=window, global_attention_mask=gm, padding_mask=pm,
                                 causal=causal, attention_dilation=dilation, backend="blocked")
    mask = feature_mask(n, window, gm, pm, causal=causal, dilation=dilation)
    ref, _ = dense_attention(q, k, v, mask)
    _check_rows(out, ref, pm, TOL[dtype])
    # the feature matters on these inputs: the undilated / non-causal rule gives another answer
    other, _ = dense_attention(q, k, v, feature_mask(n, window, gm, pm, causal=not causal, dilation=dilation))
    assert not torch.allclose(other[:, :, :n // 2], ref[:, :, :n // 2])


def test_dilation_is_not_the_plain_window():
    q, k, v, pm, gm = _inputs(3, 1, 2, 41, 4, torch.float64, 1, pad=5)
    out = local_global_attention(q, k, v, attention_window=3, attention_dilation=2, global_attention_mask=gm,
                                 padding_mask=pm)
    plain, _ = dense_attention(q, k, v, feature_mask(41, 3, gm, pm))
    wide, _ = dense_attention(q, k, v, feature_mask(41, 6, gm, pm))
    assert not torch.allclose(out, plain) and not torch.allclose(out, wide)


@pytest.mark.parametrize("n,window,dilation", [(45, 5, 2), (31, 3, 3)])
def test_causal_dilated_gradients_match_dense(n, window, dilation):
    q, k, v, pm, gm = _inputs(1, 2, 2, n, 4, torch.float64, 2, pad=8, grad=True)
    kw = dict(attention_window=window, global_attention_mask=gm, padding_mask=pm, causal=True,
              attention_dilation=dilation)
    out = local_global_attention(q, k, v, **kw)
    w = torch.randn_like(out) * pm[:, None, :, None]
    grads = torch.autograd.grad((out * w).sum(), (q, k, v))
    ref, _ = dense_attention(q, k, v, feature_mask(n, window, gm, pm, causal=True, dilation=dilation))
    ref_grads = torch.autograd.grad((ref * w).sum(), (q, k, v))
    for a, r in zip(grads, ref_grads):
        torch.testing.assert_close(a, r, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("block_target,chunk_elems", [(2, 64), (3, 700), (3, 2000), (32, 10**9)])
def test_block_sizes_and_chunking_match_dense(monkeypatch, block_target, chunk_elems):
    """Query blocks smaller than the window (window rounded up to a multiple of the block), several chunks
    per subsequence and several subsequences per chunk, with many global tokens."""
    monkeypatch.setattr(lg, "_BLOCK_TARGET", block_target)
    monkeypatch.setattr(lg, "_CHUNK_ELEMS", chunk_elems)
    n, window, dilation = 61, 5, 2
    q, k, v, pm, gm = _inputs(9, 2, 2, n, 4, torch.float64, 12, pad=15, grad=True)
    out = local_global_attention(q, k, v, attention_window=window, attention_dilation=dilation, causal=True,
                                 global_attention_mask=gm, padding_mask=pm)
    ref, _ = dense_attention(q, k, v, feature_mask(n, window, gm, pm, causal=True, dilation=dilation))
    _check_rows(out, ref, pm, 1e-10)
    w = torch.randn_like(out) * pm[:, None, :, None]
    for a, r in zip(torch.autograd.grad((out * w).sum(), (q, k, v)), torch.autograd.grad((ref * w).sum(), (q, k, v))):
        torch.testing.assert_close(a, r, atol=1e-10, rtol=1e-10)


def _separate_reference(q, k, v, qg, kg, vg, gm, pm, window, causal, dilation):
    mask = feature_mask(q.shape[2], window, gm, pm, causal=causal, dilation=dilation)
    local, _ = dense_attention(q, k, v, mask)
    glob, _ = dense_attention(qg, kg, vg, mask)  # rows of global queries: every real (earlier) key
    return torch.where((gm & pm)[:, None, :, None], glob, local)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("causal,dilation", [(False, 1), (True, 2)])
def test_separate_global_projections_match_dense(dtype, causal, dilation):
    n, window = 43, 4
    q, k, v, pm, gm = _inputs(7, 2, 2, n, 8, dtype, 4, pad=9, grad=dtype == torch.float64)
    qg, kg, vg, _, _ = _inputs(8, 2, 2, n, 8, dtype, 0, pad=1, grad=dtype == torch.float64)
    out = local_global_attention(q, k, v, attention_window=window, global_attention_mask=gm, padding_mask=pm,
                                 causal=causal, attention_dilation=dilation, global_qkv=(qg, kg, vg))
    ref = _separate_reference(q, k, v, qg, kg, vg, gm, pm, window, causal, dilation)
    _check_rows(out, ref, pm, TOL[dtype])
    shared = local_global_attention(q, k, v, attention_window=window, global_attention_mask=gm, padding_mask=pm,
                                    causal=causal, attention_dilation=dilation)
    assert not torch.allclose(shared, out)  # the global projections are really used
    if dtype == torch.float64:
        w = torch.randn_like(out) * pm[:, None, :, None]
        inputs = (q, k, v, qg, kg, vg)
        for a, r in zip(torch.autograd.grad((out * w).sum(), inputs), torch.autograd.grad((ref * w).sum(), inputs)):
            torch.testing.assert_close(a, r, atol=1e-10, rtol=1e-10)


def test_module_separate_global_projections():
    torch.manual_seed(0)
    shared = LocalGlobalAttention(16, 2, attention_window=3, causal=True, attention_dilation=2).double()
    sep = LocalGlobalAttention(16, 2, attention_window=3, causal=True, attention_dilation=2,
                               separate_global_projections=True).double()
    sep.load_state_dict(shared.state_dict(), strict=False)
    sep.in_proj_global.load_state_dict(shared.in_proj.state_dict())
    assert "in_proj_global.weight" in sep.state_dict() and "in_proj_global.weight" not in shared.state_dict()
    x = torch.randn(2, 29, 16, dtype=torch.float64)
    pm = torch.ones(2, 29, dtype=torch.bool)
    pm[1, 20:] = False
    gm = torch.zeros(2, 29, dtype=torch.bool)
    gm[0, [0, 11]] = True
    gm[1, 5] = True
    # initialised as a copy of the local projections: the same function as shared projections
    fresh = LocalGlobalAttention(16, 2, attention_window=3, separate_global_projections=True)
    assert torch.equal(fresh.in_proj_global.weight, fresh.in_proj.weight)
    torch.testing.assert_close(sep(x, pm, gm), shared(x, pm, gm), atol=1e-12, rtol=1e-12)
    # trained apart: the module equals the functional core fed with both projections
    with torch.no_grad():
        sep.in_proj_global.weight.add_(0.3 * torch.randn_like(sep.in_proj_global.weight))
    out = sep(x, pm, gm)
    split = lambda t: t.view(2, 29, 3, 2, 8).unbind(2)  # noqa: E731
    q, k, v = (t.transpose(1, 2) for t in split(sep.in_proj(x)))
    qg, kg, vg = (t.transpose(1, 2) for t in split(sep.in_proj_global(x)))
    ref = local_global_attention(q, k, v, attention_window=3, global_attention_mask=gm, padding_mask=pm,
                                 causal=True, attention_dilation=2, global_qkv=(qg, kg, vg))
    torch.testing.assert_close(out, sep.merge(ref), atol=1e-12, rtol=1e-12)
    assert not torch.allclose(out, shared(x, pm, gm))
    out.sum().backward()
    assert sep.in_proj_global.weight.grad.abs().sum() > 0


def test_dropout_gradients_are_consistent():
    """Dropout masks are replayed in backward: gradcheck on a seeded call (float64)."""
    q, k, v, pm, gm = _inputs(4, 1, 2, 19, 3, torch.float64, 2, pad=4, grad=True)

    def f(q, k, v):
        torch.manual_seed(11)
        return local_global_attention(q, k, v, attention_window=2, attention_dilation=2, causal=True,
                                      global_attention_mask=gm, padding_mask=pm, dropout_p=0.3) * pm[:, None, :, None]

    no_dropout = local_global_attention(q, k, v, attention_window=2, attention_dilation=2, causal=True,
                                        global_attention_mask=gm, padding_mask=pm) * pm[:, None, :, None]
    assert torch.equal(f(q, k, v), f(q, k, v))  # replayable from the global seed
    assert not torch.allclose(f(q, k, v), no_dropout)  # dropout is really on
    assert torch.autograd.gradcheck(f, (q, k, v), atol=1e-7, rtol=1e-5, fast_mode=True)


def test_no_quadratic_tensor_with_features():
    n, w = 2048, 16
    q, k, v, pm, gm = _inputs(2, 1, 1, n, 4, torch.float32, 3, pad=0)
    q.requires_grad_(True)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        local_global_attention(q, k, v, attention_window=w, attention_dilation=3, causal=True,
                               global_attention_mask=gm, padding_mask=pm, global_qkv=(q, k, v))
    assert max(sizes) <= 4 * n * w, (max(sizes), n * n)


def test_bf16_autocast_with_a_fully_padded_row():
    torch.manual_seed(0)
    mod = LocalGlobalAttention(32, 4, attention_window=4, attention_dilation=2, causal=True,
                               separate_global_projections=True)
    x = torch.randn(3, 37, 32, requires_grad=True)
    pm = torch.ones(3, 37, dtype=torch.bool)
    pm[1] = False  # a fully padded row
    pm[2, 30:] = False
    gm = torch.zeros(3, 37, dtype=torch.bool)
    gm[:, 0] = True
    gm[2, 17] = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mod(x, pm, gm)
        assert out.dtype == torch.bfloat16
        out.float().square().sum().backward()
    assert torch.isfinite(out.float()).all()
    assert torch.isfinite(x.grad).all() and x.grad[0].abs().sum() > 0
    for name, p in mod.named_parameters():
        assert torch.isfinite(p.grad).all(), name
    # bf16 stays close to the float32 result on real rows
    ref = mod(x, pm, gm)
    torch.testing.assert_close(out.float()[pm], ref[pm], atol=0.1, rtol=0.1)


def test_flex_mask_mod_and_block_mask_match_dense_rule():
    n, window, dilation = 45, 3, 2
    _, _, _, pm, gm = _inputs(5, 2, 1, n, 1, torch.float32, 3, pad=10)
    glob = gm & pm
    for causal in (False, True):
        mod = lg.flex_mask_mod(pm & ~glob, glob, window, dilation, causal)
        b = torch.arange(2)[:, None, None, None]
        i = torch.arange(n)
        got = mod(b, torch.zeros(1, 1, 1, 1, dtype=torch.long), i[None, None, :, None], i[None, None, None, :])[:, 0]
        ref = feature_mask(n, window, gm, pm, causal=causal, dilation=dilation)
        rows = ~glob[:, :, None].expand_as(ref)  # rows of global queries are computed separately
        assert torch.equal(got[rows], ref[rows])
        block = 16
        bm = lg.flex_block_mask(pm & ~glob, glob, window, dilation, causal, block_size=block)
        nb = -(-n // block)
        padded = torch.zeros(2, nb * block, nb * block, dtype=torch.bool)
        padded[:, :n, :n] = got
        expect = padded.view(2, nb, block, nb, block).any(dim=(2, 4))
        assert torch.equal(bm.to_dense()[:, 0].bool(), expect)
        assert lg.flex_block_mask((pm & ~glob).clone(), glob.clone(), window, dilation, causal, block_size=block) is bm
        other = pm.clone()
        other[0, 3] = False
        assert lg.flex_block_mask(other & ~glob, glob, window, dilation, causal, block_size=block) is not bm


def test_backend_choice_and_errors():
    q, k, v, pm, gm = _inputs(6, 1, 2, 21, 4, torch.float32, 1, pad=3)
    kw = dict(attention_window=3, global_attention_mask=gm, padding_mask=pm)
    assert torch.equal(local_global_attention(q, k, v, **kw), local_global_attention(q, k, v, backend="blocked", **kw))
    with pytest.raises(RuntimeError, match=r"backend='flex' needs a CUDA device.*'blocked'.*'auto'"):
        local_global_attention(q, k, v, backend="flex", **kw)
    with pytest.raises(ValueError, match=r"attention.backend must be one of \['auto', 'blocked', 'flex'\]"):
        local_global_attention(q, k, v, backend="fast", **kw)
    with pytest.raises(ValueError, match=r"attention.backend must be one of"):
        LocalGlobalAttention(8, 2, backend="triton")
    with pytest.raises(ValueError, match="attention.attention_dilation must be a positive integer"):
        local_global_attention(q, k, v, attention_dilation=0, **kw)
    with pytest.raises(ValueError, match="attention.attention_dilation"):
        LocalGlobalAttention(8, 2, attention_dilation=1.5)
    with pytest.raises(ValueError, match="attention.causal must be a bool"):
        local_global_attention(q, k, v, causal=1, **kw)
    with pytest.raises(ValueError, match="attention.separate_global_projections must be a bool"):
        LocalGlobalAttention(8, 2, separate_global_projections="yes")
    with pytest.raises(ValueError, match=r"global_qkv must be a tuple \(q_g, k_g, v_g\)"):
        local_global_attention(q, k, v, global_qkv=(q, k), **kw)
    with pytest.raises(ValueError, match="attention inputs must share one shape"):
        local_global_attention(q, k, v, global_qkv=(q, k, v[:, :, :5]), **kw)


@pytest.mark.parametrize("store_max", [0, 10**9], ids=["recomputed", "kept"])
@pytest.mark.parametrize("chunk_elems", [700, 10**9])
def test_kept_and_recomputed_probabilities_give_the_dense_gradients(monkeypatch, store_max, chunk_elems):
    """Backward from the probabilities kept in forward, or recomputed chunk by chunk: the same dense gradients, with
    global keys (window / global weights per row), padding, causality, dilation and separate global projections."""
    monkeypatch.setattr(lg, "_STORE_PROBS_MAX", store_max)
    monkeypatch.setattr(lg, "_CHUNK_ELEMS", chunk_elems)
    n, window, dilation = 57, 4, 2
    q, k, v, pm, gm = _inputs(21, 3, 2, n, 4, torch.float64, 5, pad=20, grad=True)
    qg, kg, vg, _, _ = _inputs(22, 3, 2, n, 4, torch.float64, 0, pad=1, grad=True)
    for causal, global_qkv in ((False, None), (True, (qg, kg, vg))):
        out = local_global_attention(q, k, v, attention_window=window, attention_dilation=dilation, causal=causal,
                                     global_attention_mask=gm, padding_mask=pm, global_qkv=global_qkv)
        if global_qkv is None:
            ref, _ = dense_attention(q, k, v, feature_mask(n, window, gm, pm, causal=causal, dilation=dilation))
        else:
            ref = _separate_reference(q, k, v, qg, kg, vg, gm, pm, window, causal, dilation)
        _check_rows(out, ref, pm, 1e-10)
        inputs = (q, k, v) if global_qkv is None else (q, k, v, qg, kg, vg)
        w = torch.randn_like(out) * pm[:, None, :, None]
        for a, r in zip(torch.autograd.grad((out * w).sum(), inputs), torch.autograd.grad((ref * w).sum(), inputs)):
            torch.testing.assert_close(a, r, atol=1e-10, rtol=1e-10)


def test_recomputed_dropout_gradients_are_consistent(monkeypatch):
    monkeypatch.setattr(lg, "_STORE_PROBS_MAX", 0)
    test_dropout_gradients_are_consistent()


def test_masks_and_band_are_built_once_per_forward_and_follow_in_place_changes(monkeypatch):
    """The layers of a forward pass and the reversible recomputation share one band; a mask changed in place is seen."""
    from longdoc.models import Encoder

    built = []
    post_init = lg._Band.__post_init__
    monkeypatch.setattr(lg._Band, "__post_init__", lambda self: (built.append(1), post_init(self))[1])
    torch.manual_seed(0)
    enc = Encoder(vocab_size=20, d_model=16, n_heads=2, depth=3, d_ff=32,
                  attention={"name": "local_global", "attention_window": 4}, position={"name": "axial"},
                  max_seq_len=64, dropout=0.0, reversible=True).double()
    ids = torch.randint(3, 20, (2, 37))
    pm = torch.ones(2, 37, dtype=torch.bool)
    gm = torch.zeros_like(pm)
    gm[:, 0] = True
    enc(ids, pm, gm).sum().backward()
    assert len(built) == 1
    pm[1, 25:] = False  # in place: the cached masks must not be reused
    out = enc(ids, pm, gm)
    assert len(built) == 2
    torch.testing.assert_close(out, enc(ids, pm.clone(), gm.clone()), atol=0, rtol=0)
