"""attended_pairs: the (query, key) pairs each attention module reports from its own masking code equal
independent dense rebuilds of the rule (plain loops for Longformer, tests.reference for LSH), and the module
methods agree with the functional forms and with the probabilities measured through the kernels."""

import pytest
import torch

from longdoc.attention import (
    FullAttention,
    LocalGlobalAttention,
    LSHAttention,
    full_pairs,
    local_global_pairs,
    lsh_attention,
    lsh_pairs,
)
from tests.reference import lsh_round_masks


def local_global_rule_loops(real, glob, w, d=1, causal=False):
    """Dense reference written from the rule in plain Python loops (Beltagy et al. 2020, section 3.1)."""
    b, n = real.shape
    out = torch.zeros(b, n, n, dtype=torch.bool)
    for bi in range(b):
        for i in range(n):
            if not real[bi, i]:
                continue  # padding queries: outputs unused
            gi = bool(glob[bi, i])
            for j in range(n):
                if not real[bi, j] or (causal and j > i):
                    continue
                window = abs(i - j) <= w * d and (i - j) % d == 0
                out[bi, i, j] = gi or bool(glob[bi, j]) or window
    return out


def _masks(b, n, seed):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(n // 2, n + 1, (b,), generator=g)
    real = torch.arange(n)[None, :] < lengths[:, None]
    glob = torch.zeros(b, n, dtype=torch.bool)
    glob[:, 0] = True
    glob[0, n - 1] = True  # a global flag on a padding position is ignored
    glob[1, 5] = True
    return real, glob


@pytest.mark.parametrize("w,d,causal", [(3, 1, False), (2, 3, False), (4, 2, True)])
def test_local_global_pairs_equal_the_rule(w, d, causal):
    real, glob = _masks(2, 40, seed=w + d)
    got = local_global_pairs(real, glob, attention_window=w, attention_dilation=d, causal=causal)
    assert torch.equal(got, local_global_rule_loops(real, glob, w, d, causal))


def test_full_pairs_are_the_padding_outer_product():
    real, _ = _masks(2, 17, seed=0)
    assert torch.equal(full_pairs(real), real[:, :, None] & real[:, None, :])
    assert torch.equal(full_pairs(real, causal=True), (real[:, :, None] & real[:, None, :]).tril())


@pytest.mark.parametrize("opts", [{}, {"n_chunks_before": 0, "n_chunks_after": 1}, {"causal": True},
                                  {"attend_across_buckets": False, "n_chunks_before": 2}])
def test_lsh_pairs_equal_an_independent_rebuild_from_the_buckets(opts):
    b, h, n, dh, bs = 2, 2, 45, 8, 8  # n not a multiple of the bucket size: a padded tail
    real, _ = _masks(b, n, seed=1)
    qk, v = torch.randn(b, h, n, dh), torch.randn(b, h, n, dh)
    _, buckets = lsh_attention(qk, v, n_hashes=3, bucket_size=bs, padding_mask=real, seed=7, return_buckets=True,
                               **opts)
    got = lsh_pairs(buckets, bucket_size=bs, n=n, padding_mask=real, **opts)
    ref = lsh_round_masks(buckets, n, bs, real.tolist(), before=opts.get("n_chunks_before", 1),
                          after=opts.get("n_chunks_after", 0), causal=opts.get("causal", False),
                          across=opts.get("attend_across_buckets", True))
    ref = ref.permute(1, 2, 0, 3, 4) & real[:, None, None, :, None]  # (B, H, R, n, n); padding queries: none
    assert torch.equal(got, ref)


def test_module_methods_match_the_functional_forms_and_the_probabilities():
    b, n, d_model, h = 2, 30, 16, 2
    real, glob = _masks(b, n, seed=3)
    hidden = torch.randn(b, n, d_model)
    torch.manual_seed(0)
    full = FullAttention(d_model, h, causal=True).eval()
    lg = LocalGlobalAttention(d_model, h, attention_window=3, attention_dilation=2,
                              separate_global_projections=True).eval()
    lsh = LSHAttention(d_model, h, n_hashes=2, bucket_size=4, seed=5).eval()
    assert torch.equal(full.attended_pairs(real), full_pairs(real, causal=True)[:, None].expand(b, h, n, n))
    assert torch.equal(lg.attended_pairs(real, glob),
                       local_global_pairs(real, glob, attention_window=3, attention_dilation=2)[:, None].expand(b, h, n, n))
    with pytest.raises(ValueError, match="no buckets given and none kept"):
        lsh.attended_pairs(real)
    lsh.keep_buckets = True
    lsh(hidden, real)
    assert lsh.last_buckets.shape == (b, h, 2, 32)
    per_round = lsh.attended_pairs(real, per_round=True)
    assert torch.equal(per_round, lsh_pairs(lsh.last_buckets, bucket_size=4, n=n, padding_mask=real))
    assert torch.equal(lsh.attended_pairs(real), per_round.any(dim=2))
    for mod in (full, lg, lsh):
        probs = mod.attention_probabilities(hidden, real, glob)
        assert probs.shape == (b, h, n, n) and probs.dtype == torch.float32
        torch.testing.assert_close(probs.sum(-1)[real[:, None].expand(b, h, n)], torch.ones(int(real.sum()) * h))
        pairs = mod.attended_pairs(real, glob)
        assert torch.equal(probs > 0, pairs & real[:, None, :, None])


def test_pairs_without_masks_need_a_length():
    with pytest.raises(ValueError, match="needs padding_mask or n"):
        full_pairs(None)
    assert full_pairs(None, 5).shape == (1, 5, 5)
    assert LocalGlobalAttention(8, 2, attention_window=1).attended_pairs(seq_len=6).shape == (1, 2, 6, 6)
    with pytest.raises(ValueError, match="needs padding_mask, global_attention_mask or n"):
        local_global_pairs(None, None, attention_window=2)
