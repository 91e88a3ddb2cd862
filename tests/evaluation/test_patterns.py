"""mode=attention_pattern: attended pairs from the kernels' own code agree with independent dense rebuilds,
and the probabilities measured through the kernels are non-zero exactly on those pairs."""

import pytest
import torch

from longdoc.attention import lsh_attention
from longdoc.evaluate import evaluate
from longdoc.evaluation.patterns import (
    attention_pattern,
    full_pairs,
    local_global_pairs,
    lsh_pairs,
    synthetic_input,
)
from longdoc.models import Encoder
from longdoc.train import train
from tests.reference import lsh_round_masks


def _local_global_loops(real, glob, w, d=1, causal=False):
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
    assert torch.equal(got, _local_global_loops(real, glob, w, d, causal))


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


ATTN = {"local_global": {"name": "local_global", "attention_window": 4, "attention_dilation": 2,
                         "separate_global_projections": True},
        "lsh": {"name": "lsh", "bucket_size": 8, "n_hashes": 2, "allow_duplicate_attention": False},
        "full": {"name": "full"}}


@pytest.mark.parametrize("name", list(ATTN))
def test_captured_pairs_match_the_kernel_probabilities(name):
    n = 50
    ids, real, glob = synthetic_input(n, padding=9, seed=2)
    torch.manual_seed(0)
    enc = Encoder(vocab_size=32, d_model=32, n_heads=2, depth=2, d_ff=32, attention=ATTN[name],
                  position={"name": "axial"}, max_seq_len=n, reversible=name == "lsh")
    pats = attention_pattern(enc, ids, real, glob)
    assert [p.layer for p in pats] == [0, 1] and all(p.name == name for p in pats)
    rows_real = real[0]
    for p in pats:
        assert p.pairs.shape == p.probs.shape == (1, 2, n, n)
        torch.testing.assert_close(p.probs.sum(-1)[0][:, rows_real], torch.ones(2, int(rows_real.sum())))
        assert torch.equal(p.probs > 0, p.pairs)  # the kernel attends exactly the pairs, no more, no less
        assert not p.pairs[..., ~rows_real, :].any() and not p.pairs[..., ~rows_real].any()
        if name == "local_global":
            assert torch.equal(p.pairs[0, 0], _local_global_loops(real, glob, 4, 2)[0])
        if name == "lsh":
            assert p.rounds.max() <= 2 and p.rounds[0, 0].diagonal()[rows_real].sum() < rows_real.sum()


def test_attention_pattern_mode_synthetic(compose_cfg, tmp_path):
    out = tmp_path / "pat"
    cfg = compose_cfg("mode=attention_pattern", "pattern.length=64", "pattern.padding=8",
                      '+pattern.model_overrides=["model.d_model=32","model.n_heads=2","model.depth=1"]',
                      f"paths.output_dir={out}", config_name="evaluate")
    res = evaluate(cfg)
    assert [p.name for p in res["patterns"]] == ["local_global", "lsh", "full"]
    assert (out / "attention_pattern.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="pattern.padding"):
        evaluate(compose_cfg("mode=attention_pattern", "pattern.length=8", "pattern.padding=8", config_name="evaluate"))


def test_attention_pattern_and_efficiency_from_a_checkpoint(compose_cfg, tmp_path):
    cfg = compose_cfg("attention=lsh", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                      "trainer.limit_val_batches=1", "trainer.accelerator=cpu", "trainer.num_sanity_val_steps=0",
                      "test=false")
    train(cfg)
    ckpt = tmp_path / "out" / "checkpoints" / "last.ckpt"
    out = tmp_path / "pat"
    ev = compose_cfg("mode=attention_pattern", f"ckpt_path={ckpt}", "pattern.layer=null", "pattern.head=null",
                     "pattern.sample_index=3", f"paths.output_dir={out}", config_name="evaluate")
    res = evaluate(ev)
    assert [(p.layer, p.name) for p in res["patterns"]] == [(0, "lsh"), (1, "lsh")]
    for p in res["patterns"]:
        assert torch.equal(p.probs > 0, p.pairs)
    assert (out / "attention_pattern.png").is_file()
    with pytest.raises(IndexError, match="pattern.sample_index=9999"):
        evaluate(compose_cfg("mode=attention_pattern", f"ckpt_path={ckpt}", "pattern.sample_index=9999",
                             config_name="evaluate"))
    # efficiency from the checkpoint's model: one fresh process
    eff = compose_cfg("mode=efficiency", f"ckpt_path={ckpt}", "efficiency.attentions=[lsh]", "efficiency.lengths=[48]",
                      "efficiency.repeats=1", "efficiency.separate_memory_process=false",
                      f"paths.output_dir={tmp_path / 'eff'}", config_name="evaluate")
    rows = evaluate(eff)["rows"]
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["n_params"] > 0
