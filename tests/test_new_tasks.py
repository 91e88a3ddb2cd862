"""Multi-label classification, token classification and extractive QA as selectable tasks: the registry, the task
model, LongDocModule's loss / metrics on hand-built batches in the ``collate_windows`` layout (checked against
torch's own losses, scikit-learn, seqeval and a hand-worked SQuAD scoring), real Lightning fits that lower the loss,
and the monitor / optimized_metric each task gets."""

from __future__ import annotations

import math
import re
import string
from collections import Counter

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.metrics import precision_score as seqeval_precision
from seqeval.metrics import recall_score as seqeval_recall
from sklearn.metrics import f1_score
from torch.utils.data import DataLoader

from longdoc.config import apply_task_defaults, task_of
from longdoc.lightning import LongDocModule
from longdoc.models import DATA_TASKS, TASKS, build_task_model, multilabel_loss, qa_loss, token_classification_loss
from longdoc.resolvers import metric_mode, val_metric

TINY = {"d_model": 16, "n_heads": 2, "depth": 1, "d_ff": 32, "attention": {"name": "full"},
        "position": {"name": "learned"}, "dropout": 0.0, "pooling": "cls", "head_dropout": 0.0,
        "interaction": "nli", "tie_word_embeddings": True}
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
IGN = -100


def make_module(task, num_classes=2, **kw):
    torch.manual_seed(0)
    return LongDocModule(model={**TINY, **kw.pop("model", {})}, num_classes=num_classes, vocab_size=12, max_seq_len=16,
                         task=task, optimizer={"lr": 1e-2, "weight_decay": 0.0},
                         scheduler={"warmup_steps": 0, "decay": "constant"}, **kw)


class InMemory(pl.LightningDataModule):
    """Fixed batches: ``train_batches`` repeated ``repeat`` times per epoch, ``val_batches`` for validation."""

    def __init__(self, train_batches, val_batches, repeat=1, **attrs):
        super().__init__()
        self.train_batches, self.val_batches, self.repeat = train_batches, val_batches, repeat
        for k, v in attrs.items():
            setattr(self, k, v)

    def train_dataloader(self):
        return loader(list(self.train_batches) * self.repeat)

    def val_dataloader(self):
        return loader(self.val_batches)

    def test_dataloader(self):
        return loader(self.val_batches)


def as_is(batch):
    return batch


def loader(batches):
    """A DataLoader that yields the given batch dicts unchanged."""
    return DataLoader(list(batches), batch_size=None, collate_fn=as_is)


def trainer(**kw):
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kw)


@torch.no_grad()
def eval_logits(module, batch):
    module.eval()
    out = module(batch)
    module.train()
    return out


def test_registry_and_task_models():
    for task in ("multilabel", "token_classification", "qa"):
        assert task in TASKS and task in DATA_TASKS
    ids = torch.tensor([[1, 3, 4, 5, 0]])
    pad = ids != 0
    common = {"vocab_size": 12, "max_seq_len": 16, **TINY}
    ml = build_task_model("multilabel", num_classes=4, threshold=0.3, **common)
    assert ml(ids, pad).shape == (1, 4) and ml.threshold == 0.3
    tc = build_task_model("token_classification", num_classes=5, threshold=0.3, **common)  # threshold ignored
    assert tc(ids, pad).shape == (1, 5, 5)
    qa = build_task_model("qa", num_classes=0, **common)
    ctx = torch.tensor([[False, False, True, True, False]])
    start, end = qa(ids, pad, torch.tensor([[True, True, False, False, False]]), ctx)
    lowest = torch.finfo(start.dtype).min
    assert start.shape == end.shape == (1, 5)
    assert start[0, 0] > lowest and (start[0, 2:4] > lowest).all()  # CLS and the context
    assert start[0, 1] == lowest and end[0, 4] == lowest  # question and padding masked
    with pytest.raises(ValueError, match="threshold"):
        build_task_model("multilabel", num_classes=4, threshold=1.5, **common)


# ------------------------------------------------------------------------------------------------ multi-label

def multilabel_batch():
    ids = torch.tensor([[1, 3, 4, 5, 6, 0], [1, 7, 8, 9, 0, 0], [1, 3, 9, 0, 0, 0], [1, 4, 4, 4, 4, 4]])
    labels = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 0], [1, 1, 0, 0], [IGN] * 4], dtype=torch.float)  # row 3: repeat
    glob = torch.zeros_like(ids, dtype=torch.bool)
    glob[:, 0] = True
    return {"input_ids": ids, "padding_mask": ids != 0, "global_attention_mask": glob, "labels": labels}


def test_multilabel_loss_fit_and_f1_against_sklearn():
    batch = multilabel_batch()
    module = make_module("multilabel", num_classes=4)
    loss = module.training_step(batch, 0)
    logits = eval_logits(module, batch)
    torch.testing.assert_close(loss, multilabel_loss(logits, batch["labels"])[0])
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits[:3], batch["labels"][:3]))

    dm = InMemory([batch], [batch], repeat=15)
    trainer(max_epochs=1).fit(module, datamodule=dm)
    logits = eval_logits(module, batch)
    after = F.binary_cross_entropy_with_logits(logits[:3], batch["labels"][:3])
    assert after < 0.5 * loss

    metrics = trainer().validate(module, datamodule=dm, verbose=False)[0]
    preds = (torch.sigmoid(logits[:3]) > 0.5).int().numpy()
    gold = batch["labels"][:3].int().numpy()
    assert metrics["val/f1_micro"] == pytest.approx(f1_score(gold, preds, average="micro", zero_division=0), abs=1e-6)
    assert metrics["val/f1_macro"] == pytest.approx(f1_score(gold, preds, average="macro", zero_division=0), abs=1e-6)
    assert metrics["val/loss"] == pytest.approx(float(after), rel=1e-5)

    # threshold 0.9: fewer labels predicted, scored the same way
    strict = make_module("multilabel", num_classes=4, model={"threshold": 0.9})
    strict.load_state_dict(module.state_dict())
    metrics = trainer().validate(strict, datamodule=dm, verbose=False)[0]
    preds = (torch.sigmoid(logits[:3]) > 0.9).int().numpy()
    assert metrics["val/f1_micro"] == pytest.approx(f1_score(gold, preds, average="micro", zero_division=0), abs=1e-6)


# -------------------------------------------------------------------------------------- token classification
# Document 0: 8 tokens t0..t7 with tags O B-PER I-PER O O B-LOC I-LOC O, cut into two windows of 6 tokens
# (overlap 4): window 0 = [CLS] t0..t5, owning t0..t3; window 1 = [CLS] t2..t7, owning t4..t7.
# Document 1: 4 tokens, one window, t1 a second sub-word (no label). The two windows of document 0 are in different
# batches.
DOC0 = [3, 4, 5, 6, 7, 8, 9, 10]
TAGS0 = [0, 1, 2, 0, 0, 3, 4, 0]
DOC1 = [11, 3, 5, 7]
TAGS1 = [1, IGN, 0, 3]


def tag_row(doc, tags, start, end, owned):
    ids = [1] + doc[start:end]
    labels = [IGN] + tags[start:end]
    own = [False] + [start + i in owned for i in range(end - start)]
    return ids, labels, own


def tag_batch(rows, example_index, token_start):
    n = max(len(r[0]) for r in rows)
    ids = torch.tensor([r[0] + [0] * (n - len(r[0])) for r in rows])
    labels = torch.tensor([r[1] + [IGN] * (n - len(r[1])) for r in rows])
    owned = torch.tensor([r[2] + [False] * (n - len(r[2])) for r in rows])
    ctx = torch.tensor([[False] + [True] * (len(r[0]) - 1) + [False] * (n - len(r[0])) for r in rows])
    glob = torch.zeros_like(ctx)
    glob[:, 0] = True
    return {"input_ids": ids, "padding_mask": ids != 0, "global_attention_mask": glob, "context_mask": ctx,
            "owned_mask": owned, "labels": labels, "example_index": torch.tensor(example_index),
            "window_index": torch.tensor([0] * len(rows)), "token_start": torch.tensor(token_start)}


def tag_batches():
    b1 = tag_batch([tag_row(DOC0, TAGS0, 0, 6, {0, 1, 2, 3}), tag_row(DOC1, TAGS1, 0, 4, {0, 1, 2, 3})], [0, 1], [0, 0])
    b2 = tag_batch([tag_row(DOC0, TAGS0, 2, 8, {4, 5, 6, 7})], [0], [2])
    return b1, b2


def test_token_classification_loss_fit_and_seqeval_over_documents():
    b1, b2 = tag_batches()
    module = make_module("token_classification", num_classes=len(TAGS))
    loss = module.training_step(b1, 0)  # training: every labelled token, owned or not
    logits = eval_logits(module, b1)
    torch.testing.assert_close(loss, token_classification_loss(logits, b1["labels"])[0])
    keep = b1["labels"] != IGN
    torch.testing.assert_close(loss, F.cross_entropy(logits[keep], b1["labels"][keep]))

    dm = InMemory([b1, b2], [b1, b2], repeat=12, label_names=TAGS)  # label names from the data module (setup)
    trainer(max_epochs=1).fit(module, datamodule=dm)
    l1, l2 = eval_logits(module, b1), eval_logits(module, b2)
    after = token_classification_loss(l1, b1["labels"])[0]
    assert after < 0.5 * loss

    metrics = trainer().validate(module, datamodule=dm, verbose=False)[0]
    p1, p2 = l1.argmax(-1), l2.argmax(-1)
    # document 0: t0..t3 from window 0 (columns 1..4), t4..t7 from window 1 (columns 3..6)
    pred0 = p1[0, 1:5].tolist() + p2[0, 3:7].tolist()
    pred1 = [p1[1, 1].item(), p1[1, 3].item(), p1[1, 4].item()]  # t1 has no label
    gold_tags = [[TAGS[t] for t in TAGS0], [TAGS[t] for t in (1, 0, 3)]]
    pred_tags = [[TAGS[t] for t in pred0], [TAGS[t] for t in pred1]]
    assert metrics["val/f1"] == pytest.approx(seqeval_f1(gold_tags, pred_tags, zero_division=0), abs=1e-6)
    assert metrics["val/precision"] == pytest.approx(seqeval_precision(gold_tags, pred_tags, zero_division=0),
                                                     abs=1e-6)
    assert metrics["val/recall"] == pytest.approx(seqeval_recall(gold_tags, pred_tags, zero_division=0), abs=1e-6)
    same = sum(a == b for g, p in zip(gold_tags, pred_tags) for a, b in zip(g, p))
    assert metrics["val/token_acc"] == pytest.approx(same / 11, abs=1e-6)
    # validation loss: each labelled document token once, in its owner window (11 tokens, not 13)
    owned_logits = torch.cat([l1[0, 1:5], l1[1, [1, 3, 4]], l2[0, 3:7]])
    owned_labels = torch.tensor(TAGS0[:4] + [1, 0, 3] + TAGS0[4:])
    assert metrics["val/loss"] == pytest.approx(float(F.cross_entropy(owned_logits, owned_labels)), rel=1e-5)
    assert module.hparams["label_names"] == TAGS  # saved for a module rebuilt from its checkpoint


def test_token_classification_without_label_names_says_what_to_add():
    b1, b2 = tag_batches()
    with pytest.raises(ValueError, match="label_names"):
        trainer(max_steps=1).fit(make_module("token_classification", num_classes=5),
                                 datamodule=InMemory([b1], [b1]))


# ------------------------------------------------------------------------------------------------------ QA
# Example 0 (two windows): question ids [5, 6]; context "The cat sat on the mat." as word tokens
# The(0,3) cat(4,7) sat(8,11) on(12,14) the(15,18) mat.(19,23); gold "the mat" / "mat".
# Window 0: [CLS] q q [SEP] The cat sat on [SEP]; window 1: [CLS] q q [SEP] sat on the mat. [SEP].
# Example 1 (one window): context "Paris is big" Paris(0,5) is(6,8) big(9,12); gold "Paris".
CTX0 = "The cat sat on the mat."
OFF0 = [(0, 3), (4, 7), (8, 11), (12, 14), (15, 18), (19, 23)]
IDS0 = [3, 4, 7, 8, 9, 10]
CTX1 = "Paris is big"
OFF1 = [(0, 5), (6, 8), (9, 12)]
IDS1 = [11, 8, 4]


def qa_row(ctx_ids, offsets, s, e, answer):
    ids = [1, 5, 6, 2] + ctx_ids[s:e] + [2]
    ctx = [False] * 4 + [True] * (e - s) + [False]
    offs = [None] * 4 + offsets[s:e] + [None]
    start = end = 0
    if answer is not None and s <= answer[0] and answer[1] < e:
        start, end = 4 + answer[0] - s, 4 + answer[1] - s
    return ids, ctx, offs, start, end


def qa_batch():
    rows = [qa_row(IDS0, OFF0, 0, 4, (4, 5)), qa_row(IDS0, OFF0, 2, 6, (4, 5)), qa_row(IDS1, OFF1, 0, 3, (0, 0))]
    n = max(len(r[0]) for r in rows)
    ids = torch.tensor([r[0] + [0] * (n - len(r[0])) for r in rows])
    ctx = torch.tensor([r[1] + [False] * (n - len(r[1])) for r in rows])
    glob = torch.zeros_like(ctx)
    glob[:, :3] = True
    return {"input_ids": ids, "padding_mask": ids != 0, "global_attention_mask": glob, "context_mask": ctx,
            "offsets": [r[2] for r in rows], "start_positions": torch.tensor([r[3] for r in rows]),
            "end_positions": torch.tensor([r[4] for r in rows]), "example_index": torch.tensor([0, 0, 1]),
            "window_index": torch.tensor([0, 1, 0]), "example_id": ["q0", "q0", "q1"],
            "context": [CTX0, CTX0, CTX1], "answers": [["the mat", "mat"], ["the mat", "mat"], {"text": ["Paris"]}]}


def squad_normalize(text):  # the official script's normalize_answer, written out
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def squad_em_f1(pred, golds):
    def f1(p, g):
        p, g = squad_normalize(p).split(), squad_normalize(g).split()
        if not p or not g:
            return float(p == g)
        common = sum((Counter(p) & Counter(g)).values())
        return 0.0 if common == 0 else 2 * common / (len(p) + len(g))
    return max(float(squad_normalize(pred) == squad_normalize(g)) for g in golds), max(f1(pred, g) for g in golds)


def brute_force_answer(start, end, ctx, offsets, context, windows, max_len=30):
    best, null = (-math.inf, None), math.inf
    for w in windows:
        null = min(null, float(start[w, 0] + end[w, 0]))
        cols = [i for i in range(ctx.shape[1]) if ctx[w, i]]
        for s in cols:
            for e in cols:
                if s <= e < s + max_len and float(start[w, s] + end[w, e]) > best[0]:
                    best = (float(start[w, s] + end[w, e]), (w, s, e))
    if null - best[0] > 0:
        return ""
    w, s, e = best[1]
    return context[offsets[w][s][0]:offsets[w][e][1]]


def test_qa_loss_fit_and_squad_scores_of_the_best_span_over_windows():
    batch = qa_batch()
    module = make_module("qa")
    loss = module.training_step(batch, 0)
    start, end = eval_logits(module, batch)
    torch.testing.assert_close(loss, qa_loss(start, end, batch["start_positions"], batch["end_positions"])[0])
    hand = (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])) / 2
    torch.testing.assert_close(loss, hand)

    # before training: the metrics of whatever the module predicts, over both windows of example 0
    dm = InMemory([batch], [batch], repeat=40)
    # (no inference mode: metric states reset inside it would be inference tensors the fit below cannot update)
    metrics = trainer(inference_mode=False).validate(module, datamodule=dm, verbose=False)[0]
    answers = [brute_force_answer(start, end, batch["context_mask"], batch["offsets"], CTX0, [0, 1]),
               brute_force_answer(start, end, batch["context_mask"], batch["offsets"], CTX1, [2])]
    scores = [squad_em_f1(answers[0], ["the mat", "mat"]), squad_em_f1(answers[1], ["Paris"])]
    assert metrics["val/exact_match"] == pytest.approx(100 * (scores[0][0] + scores[1][0]) / 2, abs=1e-4)
    assert metrics["val/f1"] == pytest.approx(100 * (scores[0][1] + scores[1][1]) / 2, abs=1e-4)

    trainer(max_epochs=1).fit(module, datamodule=dm)
    start, end = eval_logits(module, batch)
    after = qa_loss(start, end, batch["start_positions"], batch["end_positions"])[0]
    assert after < 0.5 * loss
    metrics = trainer().validate(module, datamodule=dm, verbose=False)[0]
    # learnt: window 1 holds "the mat." (columns 6..7), window 0 answers CLS; "the mat." normalises to "mat"
    assert batch["context"][0][15:23] == "the mat."
    assert metrics["val/exact_match"] == pytest.approx(100.0) and metrics["val/f1"] == pytest.approx(100.0)


def test_qa_windows_of_one_example_in_different_batches_score_once():
    batch = qa_batch()
    split = [{k: (v[i:j] if not isinstance(v, torch.Tensor) else v[i:j]) for k, v in batch.items()}
             for i, j in ((0, 1), (1, 3))]
    module = make_module("qa")
    together = trainer().validate(module, dataloaders=loader([batch]), verbose=False)[0]
    apart = trainer().validate(module, dataloaders=loader(split), verbose=False)[0]
    assert apart["val/exact_match"] == pytest.approx(together["val/exact_match"])
    assert apart["val/f1"] == pytest.approx(together["val/f1"])


# ---------------------------------------------------------------------------------------- monitors / config

class MultilabelData:
    task = "multilabel"


class TaggingData:
    task = "token_classification"


class QAData:
    task = "qa"


@pytest.mark.parametrize(("data", "monitor"), [("MultilabelData", "val/f1_micro"), ("TaggingData", "val/f1"),
                                               ("QAData", "val/f1")])
def test_task_defaults_pick_the_monitor_and_optimized_metric(data, monitor):
    target = f"{__name__}.{data}"
    cfg = OmegaConf.create({"data": {"_target_": target}, "task": None, "optimized_metric": None,
                            "callbacks": {"model_checkpoint": {"monitor": "val/acc", "mode": "max"}}})
    task = task_of(cfg)
    assert task == data.replace("Data", "").lower().replace("tagging", "token_classification")
    apply_task_defaults(cfg, task)
    assert (cfg.callbacks.model_checkpoint.monitor, cfg.callbacks.model_checkpoint.mode) == (monitor, "max")
    assert val_metric(target) == monitor
    cfg.optimized_metric = "val/acc"
    with pytest.raises(Exception, match="optimized_metric=val/acc"):
        apply_task_defaults(cfg, task)


def test_metric_modes_of_the_new_metrics():
    for metric in ("val/f1_micro", "val/f1_macro", "val/f1", "val/precision", "val/recall", "val/token_acc",
                   "val/exact_match"):
        assert metric_mode(metric) == "max"
    assert metric_mode("val/loss") == "min"
