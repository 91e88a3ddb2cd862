"""The CUDA path, against independent references (all skipped without a GPU; ``benchmarks/gpu_check.sh`` runs them):

* Longformer attention: the ``flex`` backend (``flex_attention`` + BlockMask) equals the ``blocked`` kernel and a
  dense masked softmax, outputs and gradients, with padding, global tokens, causality and dilation;
* exact attention: SDPA's CUDA kernels (flash / memory-efficient without a mask, masked otherwise) equal the dense
  softmax in float32 and bf16;
* bf16 autocast training steps of every attention, plain and reversible, eager and ``model.compile``: finite loss
  and gradients, the loss goes down on a repeated batch, compiled == eager;
* ``train.py trainer=gpu`` (bf16-mixed) for every attention and ``trainer=ddp`` (NCCL, reversible LSH);
* ``benchmarks/model.py --device cuda --dtype bf16`` runs and writes its ratio rows.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from longdoc.attention import full_attention, local_global_attention
from longdoc.models import SequenceClassifier, compile_model
from tests.reference import dense_attention

pytestmark = pytest.mark.cuda
ROOT = Path(__file__).resolve().parents[1]
DEV = "cuda"


def _local_global_mask(n, window, gm, pm, causal=False, dilation=1):
    """Query i attends key j iff j is real, (j <= i if causal), and i global, j global or |i - j| <= w d with
    (i - j) % d == 0 (Beltagy et al. 2020, section 3.1), by index arithmetic."""
    i = torch.arange(n, device=pm.device)
    diff = i[:, None] - i[None, :]
    band = (diff.abs() <= window * dilation) & (diff % dilation == 0)
    g = gm & pm
    m = band[None] | g[:, :, None] | g[:, None, :]
    if causal:
        m = m & (diff >= 0)[None]
    return m & pm[:, None, :]


def _inputs(seed, b, h, n, d, dtype, n_global, pad):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, generator=g).to(DEV, dtype).requires_grad_(True) for _ in range(3))
    pm = torch.ones(b, n, dtype=torch.bool)
    gm = torch.zeros(b, n, dtype=torch.bool)
    for i in range(1, b):
        pm[i, n - int(torch.randint(1, pad + 1, (1,), generator=g)):] = False
    for i in range(b):
        gm[i, torch.randperm(n, generator=g)[:n_global]] = True
    return q, k, v, pm.to(DEV), gm.to(DEV)


def _grads(out, inputs, w):
    return torch.autograd.grad((out.float() * w).sum(), inputs)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("n,window,dilation,causal,n_global", [
    (1000, 64, 1, False, 3),   # not a multiple of flex's 128-block
    (2048, 128, 1, False, 1),  # the benchmark's shape
    (777, 16, 3, True, 2),
])
def test_flex_equals_blocked_and_dense(dtype, tol, n, window, dilation, causal, n_global):
    q, k, v, pm, gm = _inputs(n + window, 2, 4, n, 64, dtype, n_global, pad=n // 5)
    kw = dict(attention_window=window, attention_dilation=dilation, causal=causal, global_attention_mask=gm,
              padding_mask=pm)
    flex = local_global_attention(q, k, v, backend="flex", **kw)
    blocked = local_global_attention(q, k, v, backend="blocked", **kw)
    assert flex.dtype == blocked.dtype == dtype
    ref, _ = dense_attention(q.double(), k.double(), v.double(),
                             _local_global_mask(n, window, gm, pm, causal=causal, dilation=dilation))
    real = pm[:, None, :, None].expand_as(flex)
    torch.testing.assert_close(flex.float()[real], blocked.float()[real], atol=tol, rtol=tol)
    torch.testing.assert_close(flex.double()[real], ref[real], atol=tol, rtol=tol)
    w = torch.randn(flex.shape, device=DEV) * pm[:, None, :, None]
    for a, b in zip(_grads(flex, (q, k, v), w), _grads(blocked, (q, k, v), w)):
        scale = b.float().abs().max().clamp_min(1.0)
        torch.testing.assert_close(a.float() / scale, b.float() / scale, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("padded", [False, True], ids=["no-mask (flash)", "padding mask"])
def test_sdpa_kernels_equal_dense(dtype, tol, padded):
    q, k, v, pm, _ = _inputs(7, 3, 4, 1536, 64, dtype, 0, pad=500)
    if not padded:
        pm = torch.ones_like(pm)
    out = full_attention(q, k, v, pm)
    ref, _ = dense_attention(q.double(), k.double(), v.double(), pm[:, None, :].expand(-1, pm.shape[1], -1))
    real = pm[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out.double()[real], ref[real], atol=tol, rtol=tol)


ATTENTION = {
    "full": {"name": "full"},
    "lsh": {"name": "lsh", "bucket_size": 32, "n_hashes": 2, "seed": 0},
    "local_global": {"name": "local_global", "attention_window": 32},
}


def _model(name, reversible, dropout=0.0):
    torch.manual_seed(0)
    return SequenceClassifier(num_classes=4, vocab_size=64, d_model=128, n_heads=4, depth=2, d_ff=256,
                              attention=ATTENTION[name], position={"name": "axial"}, max_seq_len=2048,
                              dropout=dropout, reversible=reversible).to(DEV)


def _batch(n=1500):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 64, (4, n), generator=g)
    pm = torch.ones(4, n, dtype=torch.bool)
    pm[1, n - 300:] = False
    pm[3, n // 2:] = False
    ids[~pm] = 0
    gm = torch.zeros_like(pm)
    gm[:, 0] = True
    return ids.to(DEV), pm.to(DEV), gm.to(DEV), torch.tensor([0, 1, 2, 3], device=DEV)


def _train(model, batch, steps, bf16=True, lr=3e-3):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    ids, pm, gm, y = batch
    losses = []
    for _ in range(steps):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            logits = model(ids, pm, gm)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), name
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("reversible", [False, True], ids=["plain", "reversible"])
@pytest.mark.parametrize("name", list(ATTENTION))
def test_bf16_training_steps_are_finite_and_learn(name, reversible):
    losses = _train(_model(name, reversible, dropout=0.1), _batch(), steps=8)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert min(losses[-3:]) < losses[0], losses  # a repeated batch is being fitted


@pytest.mark.parametrize("name", list(ATTENTION))
def test_compiled_equals_eager_on_cuda(name):
    batch = _batch(1024)
    eager, compiled = _model(name, False), _model(name, False)
    compile_model(compiled)
    le, lc = _train(eager, batch, steps=2, bf16=False), _train(compiled, batch, steps=2, bf16=False)
    assert lc == pytest.approx(le, rel=1e-4, abs=1e-5)
    assert all(torch.isfinite(torch.tensor(_train(_model(name, True), batch, steps=2))))  # reversible, bf16
    rev = _model(name, True)
    compile_model(rev)
    assert all(torch.isfinite(torch.tensor(_train(rev, batch, steps=2))))


SHORT = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2", "trainer.log_every_n_steps=1"]


@pytest.mark.parametrize("attention", list(ATTENTION))
def test_train_py_bf16_mixed_on_gpu(compose_cfg, attention):
    from longdoc.train import train

    metrics = train(compose_cfg("trainer=gpu", f"attention={attention}", *SHORT))
    assert torch.isfinite(torch.tensor(metrics["test/acc"]))


def test_nccl_ddp_reversible_lsh(tmp_path, data_dir):
    devices = min(2, torch.cuda.device_count())
    run_dir = tmp_path / "logs" / "run"
    cmd = [sys.executable, "train.py", "trainer=ddp", f"trainer.devices={devices}", "model.reversible=true",
           "attention=lsh", f"hydra.run.dir={run_dir}", f"paths.log_dir={tmp_path / 'logs'}",
           f"paths.data_dir={data_dir}", "data.num_train=128", "data.num_val=32", "data.num_test=32",
           "data.min_length=10", "data.max_length=200", "data.batch_size=16", "model.d_model=64", "model.n_heads=2",
           "model.d_ff=128", "trainer.max_epochs=1", "callbacks.progress_bar=null",
           "trainer.enable_progress_bar=false", "callbacks.model_summary=null"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert "DDP replicas: max |param(rank r) - param(rank 0)| = 0 over" in out, out[-4000:]


def test_model_benchmark_bf16_runs(tmp_path):
    pytest.importorskip("transformers")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "model.py"), "--device", "cuda", "--dtype", "bf16",
           "--lengths", "4096", "--impls", "longdoc-local_global", "hf-longformer", "flex-local_global",
           "--repeats", "1", "--warmup", "1", "--out", str(tmp_path)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    rows = list(csv.DictReader(open(tmp_path / "model.csv")))
    assert {r["impl"]: r["status"] for r in rows} == dict.fromkeys(
        ["longdoc-local_global", "hf-longformer", "flex-local_global"], "ok"), rows
    md = (tmp_path / "model.md").read_text()
    assert "**local_global / hf-longformer time**" in md and "**local_global / bare flex time**" in md
