"""mode=attention_pattern: the pairs captured from a real forward pass agree with an independent dense rebuild,
and the probabilities measured through the kernels are non-zero exactly on those pairs (the pair rules of the
attention modules themselves: tests/attention/test_attended_pairs.py)."""

import pytest
import torch

from longdoc.evaluate import evaluate
from longdoc.evaluation.patterns import attention_pattern, synthetic_input
from longdoc.models import Encoder
from longdoc.train import train
from tests.attention.test_attended_pairs import local_global_rule_loops


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
            assert torch.equal(p.pairs[0, 0], local_global_rule_loops(real, glob, 4, 2)[0])
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
