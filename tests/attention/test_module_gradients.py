"""The attention *modules* (projections + kernel + merge) against independent references, gradients included.

The functional cores are tested on their own elsewhere; these tests cover the path a model trains through:
``in_proj`` -> (fused) kernel -> ``out_proj``, whose custom backward once wrote the LSH gradients of the fused
(B, N, 2, H, Dh) projection in the wrong row order (the forward was right, so output-only tests passed and the
model did not learn). References: dense masked softmax written from the papers' formulas (tests/reference.py),
and torch's numerical differentiation (gradcheck) where no dense form exists.
"""

import pytest
import torch
import torch.nn.functional as F

from longdoc.attention import FullAttention, LocalGlobalAttention, LSHAttention
from tests.reference import dense_attention, longformer_mask, self_masked

B, N, D, H = 2, 23, 24, 3  # N is not a multiple of any window or chunk below


def _dense_module(module, x, mask, *, shared_qk):
    """The module's own projection weights, then dense masked softmax attention, then its output projection."""
    b, n, _ = x.shape
    proj = module.in_proj(x).view(b, n, -1, module.n_heads, module.head_dim)
    heads = [proj[:, :, i].transpose(1, 2) for i in range(proj.shape[2])]
    if shared_qk:
        q, v = heads
        k = F.normalize(q, dim=-1)  # Reformer section 2: keys are the shared vectors at unit length
    else:
        q, k, v = heads
    out, _ = dense_attention(q, k, v, mask)
    return module.out_proj(out.transpose(1, 2).reshape(b, n, -1))


def _grads(out, x, module, w):
    return torch.autograd.grad((out * w).sum(), [x, *module.parameters()])


def _padding():
    pm = torch.ones(B, N, dtype=torch.bool)
    pm[1, -5:] = False
    return pm


def _assert_close(got, want, tol):
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r, atol=tol, rtol=0)


@pytest.mark.parametrize("n_hashes", [1, 2])
def test_lsh_module_gradients_equal_dense_shared_qk_attention(n_hashes):
    """One chunk covers the sequence: LSH = full attention over real keys with the self-mask rule."""
    torch.manual_seed(0)
    m = LSHAttention(D, H, n_hashes=n_hashes, bucket_size=32, seed=5).double()
    x = torch.randn(B, N, D, dtype=torch.float64, requires_grad=True)
    pm = _padding()
    out = m(x, padding_mask=pm)
    ref = _dense_module(m, x, self_masked(pm[:, None, :].expand(B, N, N)), shared_qk=True)
    w = torch.randn_like(out) * pm[..., None]  # padded query rows are meaningless
    _assert_close(_grads(out, x, m, w), _grads(ref, x, m, w), 1e-10)


def test_lsh_module_gradcheck_with_several_chunks_and_padding():
    """Several chunks and hash rounds (fixed seed, so the buckets are a constant of the input's neighbourhood):
    analytical gradients of input and weights equal numerical ones."""
    torch.manual_seed(1)
    m = LSHAttention(D, H, n_hashes=2, bucket_size=4, seed=7, n_chunks_after=1).double()
    x = torch.randn(B, N, D, dtype=torch.float64, requires_grad=True)
    pm = _padding()
    names, params = zip(*m.named_parameters())

    def f(x, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (x,), {"padding_mask": pm}) * pm[..., None]

    assert torch.autograd.gradcheck(f, (x, *params), atol=1e-7, fast_mode=True)


def test_local_global_module_gradients_equal_dense_longformer_attention():
    torch.manual_seed(2)
    m = LocalGlobalAttention(D, H, attention_window=3).double()
    x = torch.randn(B, N, D, dtype=torch.float64, requires_grad=True)
    pm = _padding()
    gm = torch.zeros(B, N, dtype=torch.bool)
    gm[:, 0] = True
    gm[0, 11] = True
    out = m(x, padding_mask=pm, global_attention_mask=gm)
    ref = _dense_module(m, x, longformer_mask(N, 3, gm, pm), shared_qk=False)
    w = torch.randn_like(out) * pm[..., None]
    _assert_close(_grads(out, x, m, w), _grads(ref, x, m, w), 1e-10)


def test_full_module_gradients_equal_dense_attention():
    torch.manual_seed(3)
    m = FullAttention(D, H).double()
    x = torch.randn(B, N, D, dtype=torch.float64, requires_grad=True)
    pm = _padding()
    out = m(x, padding_mask=pm)
    ref = _dense_module(m, x, pm[:, None, :].expand(B, N, N), shared_qk=False)
    w = torch.randn_like(out) * pm[..., None]
    _assert_close(_grads(out, x, m, w), _grads(ref, x, m, w), 1e-10)
