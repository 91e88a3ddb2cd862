"""Self-pretraining objectives on the batches of any data module (root key ``task``: lm, mlm): composition
checks, the metric defaults, targets derived from ``input_ids``, the logged epoch metrics against hand
computations, and train.py's fast_dev_run on ListOps for each attention."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from longdoc.config import ConfigError, task_of
from longdoc.data.base import IGNORE_INDEX
from longdoc.lightning import LongDocModule
from longdoc.models import CausalLM, MaskedLM, next_token_targets
from longdoc.train import train, validate_config

RUN = ["trainer.fast_dev_run=true", "trainer.accelerator=cpu", "data.num_train=32", "data.num_val=16",
       "data.num_test=16", "data.batch_size=8"]
MODEL = dict(d_model=16, n_heads=2, depth=1, d_ff=32, dropout=0.0, attention={"name": "full"},
             position={"name": "learned"})


# ---------------------------------------------------------------------------------------------- composition
def test_task_defaults_to_the_data_modules_and_metrics_follow_the_task(compose_cfg):
    cfg = compose_cfg()
    assert cfg.task is None and task_of(cfg) == "classification" and cfg.optimized_metric == "val/acc"
    assert cfg.callbacks.model_checkpoint.mode == "max"
    cfg = compose_cfg("data=enwik8", "data.seq_len=32", tiny=False)
    assert task_of(cfg) == "lm" and cfg.optimized_metric == "val/bpb"  # today's value for lm data
    cfg = compose_cfg("task=mlm")
    assert task_of(cfg) == "mlm" and cfg.optimized_metric == "val/bpt"
    assert (cfg.callbacks.model_checkpoint.monitor, cfg.callbacks.model_checkpoint.mode) == ("val/bpt", "min")
    cfg = compose_cfg("task=lm")
    assert task_of(cfg) == "lm" and cfg.optimized_metric == "val/bpb" and cfg.callbacks.model_checkpoint.mode == "min"
    cfg = compose_cfg("task=mlm", "optimized_metric=val/mlm_acc")
    assert cfg.callbacks.model_checkpoint.mode == "max"
    validate_config(cfg)


@pytest.mark.parametrize("overrides,message", [
    (["task=foo"], r"task='foo' is unknown: choose one of \['classification', 'retrieval', 'lm', 'mlm', 'multilabel', "
     r"'token_classification', 'qa'\]"),
    (["task=retrieval"], r"task=retrieval needs retrieval data, but this data module's task is classification"),
    (["task=mlm", "mlm.mask_rate=1.5"], r"mlm.mask_rate must be in \(0, 1\)"),
    (["task=mlm", "mlm.span_sampling=poisson"], r"mlm.span_sampling='poisson' is unknown"),
    (["task=mlm", "mlm.mask_rate=abc"], r"mlm.mask_rate"),
    (["task=mlm", "optimized_metric=val/acc"], r"optimized_metric=val/acc is not a validation metric of task mlm"),
])
def test_bad_task_settings_fail_before_data_work(compose_cfg, overrides, message, tmp_path):
    cfg = compose_cfg(*overrides, f"paths.data_dir={tmp_path / 'data'}")
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)
    assert not (tmp_path / "data").exists()


def test_lm_task_forces_causal_attention_and_mlm_keeps_it_bidirectional(compose_cfg):
    cfg = compose_cfg("task=lm", "attention=local_global")
    _, module = validate_config(cfg)
    assert cfg.attention.causal and type(module.net) is CausalLM
    assert all(b.attention.causal for b in module.net.encoder.blocks)
    assert module.hparams.task == "lm" and module.hparams.data_task == "classification"
    assert module.net.encoder.token_embedding.num_embeddings == 18  # ListOps' vocabulary
    cfg = compose_cfg("task=mlm")
    _, module = validate_config(cfg)
    assert not cfg.attention.causal and type(module.net) is MaskedLM
    assert module.net.encoder.token_embedding.num_embeddings == 18 + 1  # + the mask token
    assert module.hparams.mlm["mask_rate"] == 0.15 and module.hparams.mlm["seed"] == cfg.seed


# ---------------------------------------------------------------------------------------------- lm targets
def test_next_token_targets_on_classification_data_by_hand():
    # CLS first, padding after the last real token (row 1), and a CLS id mid-row never becomes a target (row 2)
    ids = torch.tensor([[1, 7, 8, 9, 0, 0],
                        [1, 5, 1, 6, 4, 3]])
    real = torch.tensor([[True, True, True, True, False, False], [True] * 6])
    expect = torch.tensor([[7, 8, 9, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
                           [5, IGNORE_INDEX, 6, 4, 3, IGNORE_INDEX]])
    assert torch.equal(next_token_targets(ids, real, special_ids=(0, 1)), expect)
    rows = torch.tensor([True, False])
    got = next_token_targets(ids, real, special_ids=(0, 1), row_mask=rows)
    assert torch.equal(got[0], expect[0]) and (got[1] == IGNORE_INDEX).all()


def test_lm_module_on_classification_and_retrieval_batches_reads_document_one():
    batch = {"input_ids": torch.tensor([[1, 7, 8, 9, 0], [1, 5, 6, 0, 0]]),
             "padding_mask": torch.tensor([[True] * 4 + [False], [True] * 3 + [False] * 2]),
             "global_attention_mask": torch.tensor([[True, False, False, False, False]] * 2),
             "labels": torch.tensor([3, IGNORE_INDEX]),  # row 2: a sample repeated by the DDP sampler
             "input_ids_2": torch.tensor([[1, 4, 4]]).expand(2, 3), "padding_mask_2": torch.ones(2, 3, dtype=torch.bool),
             "global_attention_mask_2": torch.zeros(2, 3, dtype=torch.bool)}
    for data_task in ("classification", "retrieval"):
        module = LongDocModule(model={**MODEL, "attention": {"name": "full", "causal": True}}, num_classes=2,
                               vocab_size=10, max_seq_len=8, task="lm", data_task=data_task)
        labels = module.lm_labels(batch)
        assert torch.equal(labels, torch.tensor([[7, 8, 9, IGNORE_INDEX, IGNORE_INDEX], [IGNORE_INDEX] * 5]))
        logits = module(batch)
        assert logits.shape == (2, 5, 10)
        loss = module._step(batch, "val").detach()
        by_hand = -torch.log_softmax(logits[0, :3].float(), -1)[torch.arange(3), torch.tensor([7, 8, 9])].mean()
        assert float(loss) == pytest.approx(float(by_hand), rel=1e-5)


def test_classification_task_on_lm_data_is_refused():
    with pytest.raises(ValueError, match=r"task=classification needs classification data"):
        LongDocModule(model=MODEL, num_classes=2, vocab_size=10, max_seq_len=8, task="classification", data_task="lm")


# ---------------------------------------------------------------------------------------------- mlm metrics
class FixedLogits(nn.Module):
    """Returns preset logits whatever the input (a fixed model for the metric arithmetic)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, padding_mask=None, global_attention_mask=None):
        return self.logits[: input_ids.shape[0], : input_ids.shape[1]] + self.weight


def test_mlm_epoch_metrics_are_token_weighted_and_equal_a_hand_computation():
    torch.manual_seed(0)
    vocab, n = 12, 16
    module = LongDocModule(model=MODEL, num_classes=2, vocab_size=vocab, max_seq_len=n, task="mlm",
                           data_task="classification", mlm={"mask_rate": 0.4, "seed": 3})
    logits = torch.randn(4, n, vocab + 1)
    module.net = FixedLogits(logits)
    batches = []
    for rows, length in ((4, 16), (2, 7)):  # different numbers of masked tokens per batch
        ids = torch.randint(2, vocab, (rows, length))
        ids[:, 0] = 1
        glob = torch.zeros(rows, length, dtype=torch.bool)
        glob[:, 0] = True
        batches.append({"input_ids": ids, "padding_mask": torch.ones(rows, length, dtype=torch.bool),
                        "global_attention_mask": glob, "labels": torch.zeros(rows, dtype=torch.long)})
    total_nll, total, correct = 0.0, 0, 0
    for i, batch in enumerate(batches):
        # the validation masks are a fixed function of (mlm.seed, stage, batch index): replay them
        _, labels = module.mask_batch(batch, module.mask_generator("val", i, torch.device("cpu")))
        again = module.mask_batch(batch, module.mask_generator("val", i, torch.device("cpu")))[1]
        assert torch.equal(labels, again)
        for b, t in (labels != IGNORE_INDEX).nonzero().tolist():
            row = logits[b, t].tolist()
            y = int(labels[b, t])
            total_nll += math.log(sum(math.exp(v) for v in row)) - row[y]
            correct += int(max(range(len(row)), key=row.__getitem__) == y)
            total += 1
        module._step(batch, "val", i)
    assert total > 10
    assert float(module.val_mlm_nll.compute()) == pytest.approx(total_nll / total, rel=1e-5)
    assert float(module.val_mlm_acc.compute()) == pytest.approx(correct / total, rel=1e-6)
    assert float(module.val_bpt.compute()) == pytest.approx(total_nll / total / math.log(2), rel=1e-5)


def test_mlm_module_never_masks_cls_padding_or_repeats():
    module = LongDocModule(model=MODEL, num_classes=2, vocab_size=10, max_seq_len=8, task="mlm",
                           data_task="classification", mlm={"mask_rate": 0.9, "mask_token_ratio": 1.0,
                                                            "random_token_ratio": 0.0})
    batch = {"input_ids": torch.tensor([[1, 7, 8, 9, 0, 0], [1, 5, 6, 2, 3, 4]]),
             "padding_mask": torch.tensor([[True] * 4 + [False] * 2, [True] * 6]),
             "global_attention_mask": torch.tensor([[True] + [False] * 5] * 2),
             "labels": torch.tensor([IGNORE_INDEX, 1])}
    for seed in range(20):
        masked, labels = module.mask_batch(batch, torch.Generator().manual_seed(seed))
        assert (labels[0] == IGNORE_INDEX).all() and labels[1, 0] == IGNORE_INDEX
        assert masked[1, 0] == 1 and set(masked[1][labels[1] != IGNORE_INDEX].tolist()) <= {10}


# ---------------------------------------------------------------------------------------------- end to end
FAST = [("mlm", "full", False), ("mlm", "lsh", False), ("mlm", "local_global", False), ("mlm", "local_global", True),
        ("lm", "full", False), ("lm", "lsh", False), ("lm", "local_global", False), ("lm", "lsh", True)]


@pytest.mark.parametrize("task,attention,reversible", FAST)
def test_fast_dev_run_pretraining_on_listops(compose_cfg, task, attention, reversible):
    extra = ["model.reversible=true"] if reversible else []
    if task == "mlm":
        extra.append("mlm.span_length=3")
    cfg = compose_cfg(f"task={task}", f"attention={attention}", *RUN, *extra)
    metrics = train(cfg)
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    if task == "mlm":
        names = {"train/mlm_loss_step", "val/mlm_loss", "val/mlm_acc", "val/bpt", "test/mlm_loss", "test/mlm_acc",
                 "test/bpt"}
        assert abs(saved["test/bpt"] - saved["test/mlm_loss"] / math.log(2)) < 1e-4
        assert 0.0 <= saved["test/mlm_acc"] <= 1.0
        assert cfg.optimized_metric == "val/bpt" and math.isfinite(saved["val/bpt_best"])
    else:
        names = {"train/loss_step", "val/loss", "val/bpb", "test/loss", "test/bpb"}
        assert cfg.attention.causal
        assert abs(saved["test/bpb"] - saved["test/loss"] / math.log(2)) < 1e-4
    assert names <= set(saved), sorted(names - set(saved))
    assert all(math.isfinite(saved[k]) for k in names)
    assert "test/acc" not in saved and "test/majority_acc" not in saved
    assert metrics["test/" + ("mlm_loss" if task == "mlm" else "loss")] == pytest.approx(
        saved["test/" + ("mlm_loss" if task == "mlm" else "loss")])


def test_fast_dev_run_mlm_on_byte_lm_data(compose_cfg):
    """On enwik8-style byte data every id is a real byte: nothing but padding is exempt, and no pad row is frozen."""
    cfg = compose_cfg("data=enwik8", "data.source=stdlib", "data.max_bytes=20000", "data.seq_len=32",
                      "data.batch_size=4", "task=mlm", "trainer.fast_dev_run=true", "trainer.accelerator=cpu",
                      "model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.depth=1",
                      "callbacks.progress_bar=null", "trainer.enable_progress_bar=false",
                      "callbacks.model_summary=null", tiny=False)
    metrics = train(cfg)
    assert all(math.isfinite(metrics[k]) for k in ("test/mlm_loss", "test/mlm_acc", "test/bpt", "val/bpt"))
    assert "test/unigram_bpb" not in metrics
