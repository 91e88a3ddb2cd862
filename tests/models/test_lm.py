"""Causal byte-level LM: no position sees a later byte (through the whole model), the loss and bits per byte."""

import math

import pytest
import torch
import torch.nn.functional as F

from longdoc.lightning import BitsPerByte, LongDocModule
from longdoc.models import CausalLM, next_token_loss

N = 24
CAUSAL = {
    "full": {"name": "full", "causal": True},
    # one chunk holds the whole (padded) sequence, so the chunking cannot depend on later positions; the
    # same-bucket mask keeps the hashing relevant (a query sees only earlier keys of its own bucket)
    "lsh": {"name": "lsh", "causal": True, "n_hashes": 2, "bucket_size": 32, "n_buckets": 4, "seed": 0,
            "attend_across_buckets": False},
    "local_global": {"name": "local_global", "causal": True, "attention_window": 3},
}


def tiny_lm(attention, **kw):
    torch.manual_seed(0)
    return CausalLM(vocab_size=256, d_model=32, n_heads=2, depth=2, d_ff=64, dropout=0.0, attention=attention,
                    position={"name": "axial"}, max_seq_len=N, **kw).double().eval()


@pytest.mark.parametrize("name,reversible", [("full", False), ("lsh", False), ("local_global", False), ("full", True)])
def test_logits_at_t_ignore_bytes_after_t(name, reversible):
    model = tiny_lm(CAUSAL[name], reversible=reversible)
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (2, N), generator=gen)
    with torch.no_grad():
        ref = model(x)
        for t in (0, 5, 11, N - 2):
            y = x.clone()
            y[:, t + 1 :] = torch.randint(0, 256, (2, N - t - 1), generator=gen)
            out = model(y)
            torch.testing.assert_close(out[:, : t + 1], ref[:, : t + 1], atol=1e-12, rtol=0)
            assert (out[:, t + 1 :] - ref[:, t + 1 :]).abs().max() > 1e-3  # the later positions did see the change


def test_bidirectional_attention_would_fail_the_check():
    model = tiny_lm({"name": "full", "causal": False})
    x = torch.randint(0, 256, (1, N))
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % 256
    with torch.no_grad():
        assert (model(x)[:, 0] - model(y)[:, 0]).abs().max() > 1e-6


def test_tied_and_untied_heads():
    tied, untied = tiny_lm(CAUSAL["full"]), tiny_lm(CAUSAL["full"], tie_word_embeddings=False)
    assert tied.lm_head.weight is tied.encoder.token_embedding.weight
    n_tied = sum(p.numel() for p in tied.parameters())
    assert sum(p.numel() for p in untied.parameters()) == n_tied + 256 * 32
    assert tied.encoder.token_embedding.padding_idx is None  # byte 0 is a real byte
    with torch.no_grad():  # scaled tied logits start O(1), not O(sqrt(d_model))
        assert tied(torch.randint(0, 256, (2, N))).float().std() < 3.0
    module = LongDocModule(model=dict(d_model=32, n_heads=2, depth=1, d_ff=32, attention=CAUSAL["full"],
                                      position={"name": "none"}, pooling="cls", interaction="nli"),
                           num_classes=256, vocab_size=256, max_seq_len=N, task="lm")  # classifier-only keys ignored
    assert isinstance(module.net, CausalLM) and module.hparams.task == "lm"
    assert type(LongDocModule(**module.hparams).net) is CausalLM  # what longdoc.evaluation.checkpoint.load_module does


def test_next_token_loss_float32_over_targets_only():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=gen).to(torch.bfloat16)
    labels = torch.randint(0, 7, (2, 5), generator=gen)
    labels[1, 3:] = -100
    loss, count = next_token_loss(logits, labels)
    assert loss.dtype == torch.float32 and int(count) == 8
    keep = labels != -100
    manual = -torch.log_softmax(logits.float(), -1)[keep].gather(1, labels[keep][:, None]).mean()
    torch.testing.assert_close(loss, manual)
    torch.testing.assert_close(loss, F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100))
    with pytest.raises(ValueError, match=r"do not match labels"):
        next_token_loss(logits, labels[:, :4])


def test_bits_per_byte_is_token_weighted():
    metric = BitsPerByte()
    metric.update(torch.tensor(1.0), torch.tensor(10))  # 10 bytes at 1 nat
    metric.update(torch.tensor(4.0), torch.tensor(2))  # 2 bytes at 4 nats
    expected = (10 * 1.0 + 2 * 4.0) / 12 / math.log(2)  # not (1 + 4) / 2 / ln 2
    assert abs(float(metric.compute()) - expected) < 1e-6
