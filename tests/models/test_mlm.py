"""BERT / SpanBERT masking (longdoc.models.mlm) measured on real ListOps batches, and the masked-LM loss and
accuracy against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from longdoc.data.base import CLS_ID, IGNORE_INDEX, PAD_ID, PaddingCollator
from longdoc.data.listops import VOCAB_SIZE, encode_listops, sample_listops
from longdoc.models import MaskedLM, check_masking, mask_tokens, masked_lm_loss

MASK_ID = VOCAB_SIZE  # appended to the vocabulary
N_BATCHES, BATCH = 200, 16


@pytest.fixture(scope="module")
def listops_batches() -> list[dict[str, torch.Tensor]]:
    """200 padded batches of 16 distinct real ListOps samples (CLS first, lengths 20..200)."""
    samples = sample_listops(N_BATCHES * BATCH, min_length=20, max_length=200, seed=3)
    collate = PaddingCollator(PAD_ID, has_cls=True)
    items = [{"input_ids": np.array(encode_listops(src), dtype=np.int64), "label": label} for src, label, _ in samples]
    return [collate(items[i:i + BATCH]) for i in range(0, len(items), BATCH)]


def run_masking(batches, seed=0, **opts):
    gen = torch.Generator().manual_seed(seed)
    return [mask_tokens(b["input_ids"], b["padding_mask"], vocab_size=VOCAB_SIZE, special_ids=(PAD_ID, CLS_ID),
                        global_attention_mask=b["global_attention_mask"], generator=gen, **opts) for b in batches]


def binomial_tol(p: float, n: int, sigmas: float = 4.5) -> float:
    return sigmas * math.sqrt(p * (1 - p) / n)


def test_token_masking_rates_and_80_10_10_over_200_batches(listops_batches):
    outs = run_masking(listops_batches)
    candidates = selected = as_mask = as_random = kept = 0
    drawn = []
    for b, (masked, labels) in zip(listops_batches, outs):
        ids, real = b["input_ids"], b["padding_mask"]
        sel = labels != IGNORE_INDEX
        # never CLS (position 0), never padding, never a special id; nothing outside the selection changes
        assert not sel[:, 0].any() and not sel[~real].any()
        assert not sel[(ids == PAD_ID) | (ids == CLS_ID)].any()
        assert torch.equal(masked[~sel], ids[~sel])
        assert torch.equal(labels[sel], ids[sel])
        cand = real & (ids != PAD_ID) & (ids != CLS_ID)
        cand[:, 0] = False
        candidates += int(cand.sum())
        selected += int(sel.sum())
        as_mask += int((masked[sel] == MASK_ID).sum())
        is_random = sel & (masked != MASK_ID) & (masked != ids)
        as_random += int(is_random.sum())
        kept += int((sel & (masked == ids)).sum())
        drawn.append(masked[is_random])
    assert candidates > 200_000
    assert abs(selected / candidates - 0.15) < binomial_tol(0.15, candidates)
    # a random draw equals the original with probability 1 / |pool|: the pool is every id but <pad>, <cls>, mask
    pool = VOCAB_SIZE - 2
    exp = {"mask": 0.8, "random": 0.1 * (1 - 1 / pool), "kept": 0.1 + 0.1 / pool}
    for name, count in (("mask", as_mask), ("random", as_random), ("kept", kept)):
        assert abs(count / selected - exp[name]) < binomial_tol(exp[name], selected), (name, count / selected)
    # replacements: real ids only (never <pad>, <cls> or the mask), each of them drawn
    drawn = torch.cat(drawn)
    assert set(drawn.unique().tolist()) == set(range(2, VOCAB_SIZE))


@pytest.mark.parametrize("rate", [0.05, 0.3])
def test_token_masking_rate_is_configurable(listops_batches, rate):
    outs = run_masking(listops_batches[:50], seed=1, mask_rate=rate, mask_token_ratio=1.0, random_token_ratio=0.0)
    cand = sum(int(b["padding_mask"].sum()) - len(b["input_ids"]) for b in listops_batches[:50])  # minus the CLS
    sel = sum(int((lab != IGNORE_INDEX).sum()) for _, lab in outs)
    assert abs(sel / cand - rate) < binomial_tol(rate, cand)
    assert all(torch.equal(m[lab != IGNORE_INDEX], torch.full_like(lab[lab != IGNORE_INDEX], MASK_ID))
               for m, lab in outs)


def runs_of(row_selected: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end exclusive) of every maximal run of True."""
    x = row_selected.tolist()
    out, start = [], None
    for i, v in enumerate(x + [False]):
        if v and start is None:
            start = i
        if not v and start is not None:
            out.append((start, i))
            start = None
    return out


@pytest.mark.parametrize("sampling,mean", [("geometric", 3.0), ("geometric", 5.0), ("fixed", 4)])
def test_span_masking_rate_and_mean_span_length(listops_batches, sampling, mean):
    outs = run_masking(listops_batches, seed=2, span_length=mean, span_sampling=sampling)
    candidates = selected = 0
    lengths = []
    for b, (masked, labels) in zip(listops_batches, outs):
        real = b["padding_mask"]
        sel = labels != IGNORE_INDEX
        assert not sel[:, 0].any() and not sel[~real].any()
        candidates += int(real.sum()) - len(real)
        selected += int(sel.sum())
        for r in range(len(sel)):
            last = int(real[r].sum())  # one past the last real token
            for s, e in runs_of(sel[r]):
                # 80/10/10 is decided once per span: a span is all mask tokens or has none
                n_mask = int((masked[r, s:e] == MASK_ID).sum())
                assert n_mask in (0, e - s)
                if s > 1 and e < last:  # neither cut by the CLS nor by the end of the sample
                    lengths.append(e - s)
    # spans make masked tokens cluster: the count's variance is about (2 * mean) times the binomial one
    assert abs(selected / candidates - 0.15) < binomial_tol(0.15, candidates) * math.sqrt(2 * mean)
    lengths = np.array(lengths)
    if sampling == "fixed":
        assert set(lengths.tolist()) == {mean}
    else:
        # geometric with p = 1 / mean: standard deviation sqrt(1 - p) / p per span
        p = 1 / mean
        se = math.sqrt(1 - p) / p / math.sqrt(len(lengths))
        assert abs(lengths.mean() - mean) < 5 * se + 0.02 * mean, (lengths.mean(), len(lengths))
        assert abs(np.mean(lengths == 1) - p) < 0.02  # P(L = 1) = p: the geometric shape, not just its mean


def test_span_masking_never_touches_cls_padding_or_specials():
    ids = torch.tensor([[1, 5, 6, 0, 7, 8, 9, 0, 0], [1, 4, 4, 4, 4, 4, 4, 4, 4]])
    real = torch.tensor([[True] * 7 + [False] * 2, [True] * 9])
    glob = torch.zeros_like(real)
    glob[:, 0] = True
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        masked, labels = mask_tokens(ids, real, vocab_size=VOCAB_SIZE, global_attention_mask=glob, mask_rate=0.6,
                                     span_length=3, generator=gen)
        sel = labels != IGNORE_INDEX
        assert not sel[0, [0, 3, 7, 8]].any() and not sel[1, 0].any()
        assert torch.equal(masked[~sel], ids[~sel])


def test_masking_replays_with_the_same_generator_and_repeated_rows_get_no_target(listops_batches):
    b = listops_batches[0]
    one = mask_tokens(b["input_ids"], b["padding_mask"], vocab_size=VOCAB_SIZE, span_length=3,
                      generator=torch.Generator().manual_seed(7))
    two = mask_tokens(b["input_ids"], b["padding_mask"], vocab_size=VOCAB_SIZE, span_length=3,
                      generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(one, two))
    torch.manual_seed(5)
    three = mask_tokens(b["input_ids"], b["padding_mask"], vocab_size=VOCAB_SIZE)
    torch.manual_seed(5)
    four = mask_tokens(b["input_ids"], b["padding_mask"], vocab_size=VOCAB_SIZE)
    assert all(torch.equal(x, y) for x, y in zip(three, four))  # the global generator when none is given
    rows = torch.ones(len(b["input_ids"]), dtype=torch.bool)
    rows[::2] = False
    _, labels = mask_tokens(b["input_ids"], b["padding_mask"], vocab_size=VOCAB_SIZE, row_mask=rows, mask_rate=0.5)
    assert (labels[::2] == IGNORE_INDEX).all() and (labels[1::2] != IGNORE_INDEX).any()


@pytest.mark.parametrize("opts,message", [
    ({"mask_rate": 0.0}, r"mlm.mask_rate must be in \(0, 1\)"),
    ({"mask_token_ratio": 0.95, "random_token_ratio": 0.1}, r"mlm.mask_token_ratio \+ mlm.random_token_ratio"),
    ({"span_length": 0.5}, r"mlm.span_length must be >= 1"),
    ({"span_length": 2.5, "span_sampling": "fixed"}, r"must be an integer"),
    ({"span_sampling": "poisson"}, r"mlm.span_sampling='poisson' is unknown"),
    ({"span_length": 2, "mask_rate": 0.7}, r"mlm.mask_rate=0.7 is too high"),
])
def test_invalid_masking_settings(opts, message):
    with pytest.raises(ValueError, match=message):
        check_masking(**opts)


def test_masked_lm_loss_and_accuracy_by_hand():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 3.0], [1.0, 2.0, 0.0]],
                           [[0.0, 0.0, 0.0], [-2.0, 1.0, 0.5], [4.0, -1.0, 1.0]]])
    labels = torch.tensor([[0, IGNORE_INDEX, 0], [IGNORE_INDEX, 2, 0]])
    loss, count, correct = masked_lm_loss(logits, labels)

    def nll(row, y):
        return -(row[y] - math.log(sum(math.exp(v) for v in row)))

    rows = [([2.0, 0.0, -1.0], 0), ([1.0, 2.0, 0.0], 0), ([-2.0, 1.0, 0.5], 2), ([4.0, -1.0, 1.0], 0)]
    expect = sum(nll(r, y) for r, y in rows) / 4
    assert int(count) == 4
    assert int(correct) == 2  # rows 1 and 4 are argmax-correct; 2 (argmax 1) and 3 (argmax 1) are not
    assert float(loss) == pytest.approx(expect, rel=1e-6)


def test_masked_lm_model_shapes_and_tied_head():
    model = MaskedLM(vocab_size=VOCAB_SIZE, d_model=16, n_heads=2, depth=1, d_ff=32, attention={"name": "full"},
                     position={"name": "learned"}, max_seq_len=32, dropout=0.0)
    assert model.mask_token_id == VOCAB_SIZE
    assert model.encoder.token_embedding.num_embeddings == VOCAB_SIZE + 1
    assert model.lm_head.weight is model.encoder.token_embedding.weight
    ids = torch.randint(0, VOCAB_SIZE + 1, (2, 10))
    assert model(ids, torch.ones(2, 10, dtype=torch.bool)).shape == (2, 10, VOCAB_SIZE + 1)
    # bidirectional: a later token changes an earlier position's output
    model.eval()
    a = model(ids)
    ids2 = ids.clone()
    ids2[:, -1] = (ids2[:, -1] + 1) % VOCAB_SIZE
    assert not torch.allclose(a[:, 0], model(ids2)[:, 0])
