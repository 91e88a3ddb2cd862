"""Heads, losses and answer decoding of the long-document tasks: multi-label classification, token classification,
extractive QA (longdoc.models.multilabel / token_classification / qa), against hand-computed values and a
brute-force span search."""

import math

import pytest
import torch

from longdoc.models import Encoder
from longdoc.models.multilabel import MultiLabelHead, multilabel_loss, multilabel_predict
from longdoc.models.qa import (QuestionAnsweringHead, SpanPrediction, answer_text, best_span, mask_logits, qa_loss,
                               span_char_offsets)
from longdoc.models.token_classification import TokenClassificationHead, token_classification_loss

LN2, LN3 = math.log(2.0), math.log(3.0)
MIN32 = torch.finfo(torch.float32).min


def tiny_encoder():
    torch.manual_seed(0)
    return Encoder(vocab_size=12, d_model=16, n_heads=2, depth=1, d_ff=32, attention={"name": "full"},
                   position={"name": "learned"}, max_seq_len=16, dropout=0.0)


# ------------------------------------------------------------------------------------------------ multi-label

# sigmoid(0) = 1/2, sigmoid(ln 3) = 3/4, sigmoid(-ln 3) = 1/4
LOGITS = torch.tensor([[0.0, LN3, -LN3], [LN3, -LN3, 0.0]])
LABELS = torch.tensor([[1, 0, 1], [1, 0, 0]])
# -log p for y=1, -log(1-p) for y=0: row 1: ln 2, ln 4, ln 4; row 2: ln 4/3, ln 4/3, ln 2
BCE_TERMS = [LN2, 2 * LN2, 2 * LN2, math.log(4 / 3), math.log(4 / 3), LN2]


def test_bce_hand_computed_on_2x3():
    loss, count = multilabel_loss(LOGITS, LABELS)
    assert int(count) == 6 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(sum(BCE_TERMS) / 6, rel=1e-6)  # = ln 2 + ln(4/3) / 3
    assert loss.item() == pytest.approx(LN2 + math.log(4 / 3) / 3, rel=1e-6)
    loss_bf16, _ = multilabel_loss(LOGITS.to(torch.bfloat16), LABELS.bool())
    assert loss_bf16.dtype == torch.float32 and loss_bf16.item() == pytest.approx(loss.item(), rel=1e-2)


def test_bce_ignores_minus_100_and_refuses_other_labels():
    labels = LABELS.clone()
    labels[1, 2] = -100  # drops the last term (ln 2)
    loss, count = multilabel_loss(LOGITS, labels)
    assert int(count) == 5 and loss.item() == pytest.approx(sum(BCE_TERMS[:5]) / 5, rel=1e-6)
    loss, count = multilabel_loss(LOGITS, torch.full_like(LABELS, -100))
    assert int(count) == 0 and loss.item() == 0.0
    labels[0, 1] = 2
    with pytest.raises(ValueError, match=r"labels\[0, 1\]=2"):
        multilabel_loss(LOGITS, labels)
    with pytest.raises(ValueError, match=r"must both be \(B, L\)"):
        multilabel_loss(LOGITS, LABELS[:, :2])


def test_multilabel_prediction_threshold():
    # probabilities 1/2, 3/4, 1/4: strictly above the threshold
    assert multilabel_predict(LOGITS[:1]).tolist() == [[False, True, False]]
    assert multilabel_predict(LOGITS[:1], threshold=0.2).tolist() == [[True, True, True]]
    assert multilabel_predict(LOGITS[:1], threshold=0.8).tolist() == [[False, False, False]]
    with pytest.raises(ValueError, match=r"threshold=1.0 must be a probability in \[0, 1\)"):
        multilabel_predict(LOGITS, threshold=1.0)


def test_multilabel_head_on_the_encoder():
    enc, head = tiny_encoder(), MultiLabelHead(16, 5, pooling="mean", dropout=0.0)
    ids = torch.randint(2, 12, (3, 9))
    pad = torch.ones(3, 9, dtype=torch.bool)
    pad[1, 6:] = False
    logits = head(enc(ids, pad), pad)
    assert logits.shape == (3, 5) and head.num_labels == 5
    multilabel_loss(logits, torch.randint(0, 2, (3, 5)))[0].backward()
    assert head.net[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"num_labels=0"):
        MultiLabelHead(16, 0)


# --------------------------------------------------------------------------------------- token classification


def test_token_classification_loss_hand_computed():
    # token 0: logits (0, 0) -> CE ln 2 whatever the tag; token 1: (ln 3, 0), tag 0 -> p = 3/4 -> ln(4/3);
    # token 2: no label
    logits = torch.tensor([[[0.0, 0.0], [LN3, 0.0], [5.0, -5.0]]])
    labels = torch.tensor([[1, 0, -100]])
    loss, count = token_classification_loss(logits, labels)
    assert int(count) == 2 and loss.item() == pytest.approx((LN2 + math.log(4 / 3)) / 2, rel=1e-6)
    loss, count = token_classification_loss(logits, torch.full_like(labels, -100))
    assert int(count) == 0 and loss.item() == 0.0
    with pytest.raises(ValueError, match=r"labels\[0, 2\]=2 is not a tag id: expected 0 \.\. 1"):
        token_classification_loss(logits, torch.tensor([[1, 0, 2]]))
    with pytest.raises(ValueError, match=r"do not match labels"):
        token_classification_loss(logits, labels[:, :2])


def test_token_head_learns_a_per_token_rule():
    """Encoder + head fit 'tag = token id mod 3' (a rule of each token alone) in a few dozen steps."""
    enc, head = tiny_encoder(), TokenClassificationHead(16, 3, dropout=0.0)
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        ids = torch.randint(1, 12, (8, 10), generator=gen)
        labels = torch.where(torch.rand(8, 10, generator=gen) < 0.2, -100, ids % 3)
        loss, _ = token_classification_loss(head(enc(ids)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ids = torch.randint(1, 12, (8, 10), generator=gen)
    with torch.no_grad():
        acc = (head(enc(ids)).argmax(-1) == ids % 3).float().mean().item()
    assert acc > 0.95 and head(enc(ids)).shape == (8, 10, 3)


# ------------------------------------------------------------------------------------------------ QA head, loss


def test_qa_head_masks_outside_the_context_but_cls():
    enc, head = tiny_encoder(), QuestionAnsweringHead(16)
    ids = torch.randint(2, 12, (2, 8))
    ctx = torch.zeros(2, 8, dtype=torch.bool)
    ctx[0, 3:7] = True
    ctx[1, 4:8] = True
    start, end = head(enc(ids), ctx)
    assert start.shape == end.shape == (2, 8)
    for logits in (start, end):
        expected_masked = ~ctx
        expected_masked[:, 0] = False  # CLS: the no-answer slot
        assert ((logits == MIN32) == expected_masked).all()
    start, _ = head(enc(ids), ctx, cls_index=None)
    assert ((start == MIN32) == ~ctx).all()
    unmasked, _ = head(enc(ids))
    assert (unmasked > MIN32).all()
    with pytest.raises(ValueError, match=r"context_mask must be a bool tensor"):
        head(enc(ids), ctx.long())
    with pytest.raises(ValueError, match=r"cls_index=8 is outside"):
        mask_logits(start, ctx, cls_index=8)


def test_qa_loss_hand_computed_and_refusals():
    # start (0, 0, 0), target 1: p = 1/3 -> ln 3; end (ln 2, 0, 0), target 0: p = 2/4 -> ln 2
    start = torch.tensor([[0.0, 0.0, 0.0], [9.0, 1.0, 2.0]])
    end = torch.tensor([[LN2, 0.0, 0.0], [3.0, 1.0, 2.0]])
    loss, count = qa_loss(start, end, torch.tensor([1, -100]), torch.tensor([0, -100]))
    assert int(count) == 1 and loss.item() == pytest.approx((LN3 + LN2) / 2, rel=1e-6)
    # two windows: the second's CEs by hand: start (9, 1, 2) target 0: ln(1 + e^-8 + e^-7); end (3, 1, 2) target 2
    second = (math.log(1 + math.exp(-8) + math.exp(-7)) + math.log(math.exp(1) + math.exp(-1) + 1)) / 2
    loss, count = qa_loss(start, end, torch.tensor([1, 0]), torch.tensor([0, 2]))
    assert int(count) == 2 and loss.item() == pytest.approx(((LN3 + LN2) / 2 + second) / 2, rel=1e-6)
    with pytest.raises(ValueError, match=r"end_positions\[1\]=3 is outside the window's positions 0 \.\. 2"):
        qa_loss(start, end, torch.tensor([1, 0]), torch.tensor([0, 3]))
    masked = mask_logits(start, torch.tensor([[False, True, True], [False, True, False]]))
    with pytest.raises(ValueError, match=r"start_positions\[1\]=2 points at a masked position"):
        qa_loss(masked, end, torch.tensor([1, 2]), torch.tensor([0, 1]))
    loss, _ = qa_loss(masked, end, torch.tensor([1, 0]), torch.tensor([0, 2]))  # CLS (0) is never masked
    assert math.isfinite(loss.item())


# ------------------------------------------------------------------------------------------------ span decoding


def brute_force(start, end, mask, max_tokens, cls_index, threshold):
    """Every (window, start, end) in turn, in plain Python floats."""
    best, best_score = None, -math.inf
    n_windows, n = start.shape
    for w in range(n_windows):
        for s in range(n):
            for e in range(s, min(n, s + max_tokens)):
                if mask[w, s] and mask[w, e]:
                    score = float(start[w, s]) + float(end[w, e])
                    if score > best_score:
                        best, best_score = (w, s, e), score
    null = None
    if cls_index is not None:
        null = min(float(start[w, cls_index]) + float(end[w, cls_index]) for w in range(n_windows))
    is_null = best is None or (null is not None and null - best_score > threshold)
    return best, best_score, null, is_null


@pytest.mark.parametrize("seed", range(300))
def test_best_span_equals_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    n_windows, n = int(torch.randint(1, 5, (1,), generator=gen)), int(torch.randint(1, 13, (1,), generator=gen))
    start, end = torch.randn(n_windows, n, generator=gen), torch.randn(n_windows, n, generator=gen)
    if seed % 3:  # a contiguous context part after [CLS] question [SEP], as the windows have
        mask = torch.zeros(n_windows, n, dtype=torch.bool)
        for w in range(n_windows):
            a = int(torch.randint(0, n, (1,), generator=gen))
            b = int(torch.randint(a, n + 1, (1,), generator=gen))
            mask[w, a:b] = True
    else:  # any mask: only the two ends are checked
        mask = torch.rand(n_windows, n, generator=gen) < 0.6
    max_tokens = int(torch.randint(1, n + 3, (1,), generator=gen))
    cls_index = None if seed % 4 == 0 else 0
    threshold = float(torch.randn((), generator=gen))
    if seed % 2:  # logits as the head gives them: finfo.min outside the context
        start, end = mask_logits(start, mask, cls_index), mask_logits(end, mask, cls_index)
    best, score, null, is_null = brute_force(start, end, mask, max_tokens, cls_index, threshold)
    if best is None and cls_index is None:
        with pytest.raises(ValueError, match=r"no window has a valid answer span"):
            best_span(start, end, mask, max_answer_tokens=max_tokens, cls_index=None)
        return
    got = best_span(start, end, mask, max_answer_tokens=max_tokens, cls_index=cls_index, null_threshold=threshold)
    assert (got.window, got.start, got.end) == (best if best else (None, None, None))
    assert got.score == score and got.null_score == null and got.is_null == is_null
    if best is not None:
        assert got.end - got.start + 1 <= max_tokens and mask[got.window, got.start] and mask[got.window, got.end]


def test_best_span_prefers_the_best_window_and_answers_null_by_threshold():
    start = torch.tensor([[5.0, 1.0, 2.0, 0.0], [4.0, 0.0, 1.0, 3.0]])
    end = torch.tensor([[5.0, 0.0, 2.0, 1.0], [1.0, 0.0, 0.0, 2.5]])
    ctx = torch.tensor([[False, True, True, True], [False, True, True, True]])
    # spans: window 0 best (2, 2) = 4; window 1 best (3, 3) = 5.5; null = min(5 + 5, 4 + 1) = 5
    got = best_span(start, end, ctx, max_answer_tokens=2)
    assert got == SpanPrediction(1, 3, 3, 5.5, 5.0, False)
    assert best_span(start, end, ctx, null_threshold=-0.6).is_null  # 5 - 5.5 = -0.5 > -0.6
    assert not best_span(start, end, ctx, null_threshold=-0.5).is_null
    # max_answer_tokens=1 still allows (3, 3); without the last context token window 0's (2, 2) wins
    ctx[1, 3] = False
    assert best_span(start, end, ctx, max_answer_tokens=1, cls_index=None) == SpanPrediction(0, 2, 2, 4.0, None, False)
    with pytest.raises(ValueError, match=r"max_answer_tokens=0 must be >= 1"):
        best_span(start, end, ctx, max_answer_tokens=0)
    with pytest.raises(ValueError, match=r"context_mask must be bool"):
        best_span(start, end, ctx.long())
    assert best_span(start, end, torch.zeros_like(ctx)).is_null  # no span at all: the null answer


CONTEXT = "The cat sat on the mat. It purred."
# two windows of [CLS] q [SEP] + context tokens; None: not a context token
OFFSETS = [
    [None, None, None, (0, 3), (4, 7), (8, 11), (12, 14), (15, 18), (19, 22)],
    [None, None, None, (15, 18), (19, 22), (22, 23), (24, 26), (27, 33), (33, 34)],
]


def test_answer_text_maps_tokens_to_characters():
    ctx = torch.tensor([[o is not None for o in w] for w in OFFSETS])
    start, end = torch.zeros(2, 9), torch.zeros(2, 9)
    start[1, 3], end[1, 4] = 4.0, 4.0  # "the mat" in window 1
    start[0, 4], end[0, 5] = 3.0, 3.0  # "cat sat" in window 0: lower
    pred = best_span(start, end, ctx)
    assert (pred.window, pred.start, pred.end) == (1, 3, 4)
    assert span_char_offsets(OFFSETS[1], 3, 4) == (15, 22)
    assert answer_text(CONTEXT, OFFSETS, pred) == "the mat"
    assert answer_text(CONTEXT, OFFSETS, SpanPrediction(0, 4, 5, 6.0, None, False)) == "cat sat"
    assert answer_text(CONTEXT, OFFSETS, SpanPrediction(1, 6, 8, 1.0, 0.0, False)) == "It purred."
    assert answer_text(CONTEXT, OFFSETS, SpanPrediction(1, 3, 4, 1.0, 9.0, True)) == ""
    with pytest.raises(ValueError, match=r"token 2 has no character offsets"):
        span_char_offsets(OFFSETS[0], 2, 4)
    with pytest.raises(ValueError, match=r"not inside the window's 9 offsets"):
        span_char_offsets(OFFSETS[0], 5, 9)
    with pytest.raises(ValueError, match=r"run past the context's 10 characters"):
        answer_text(CONTEXT[:10], OFFSETS, pred)
