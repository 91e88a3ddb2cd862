"""The three tasks end to end: train.py's fast_dev_run on every dataset (fixtures in each official format),
and how validate_config adapts a config to its task (causal attention for lm, the checkpoint monitor)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from longdoc.config import ConfigError
from longdoc.train import validate_config
from longdoc.lightning import LongDocModule, warmup_constant, warmup_rsqrt
from longdoc.models import CausalLM, RetrievalClassifier, SequenceClassifier
from longdoc.train import train

from .conftest import TINY_MODEL
from .data.fixtures import (
    TOPIC_DOCS,
    TOPIC_TEST,
    write_aan,
    write_aclimdb,
    write_cifar10,
    write_enwik8,
    write_pathfinder,
    write_table,
)

RUN = TINY_MODEL + ["callbacks.progress_bar=null", "trainer.enable_progress_bar=false", "callbacks.model_summary=null",
                    "trainer.fast_dev_run=true", "trainer.accelerator=cpu"]
CLASSIFIER_KEYS = {"test/acc", "test/loss", "test/majority_acc", "val/acc", "val/loss", "majority_acc"}
LM_KEYS = {"test/bpb", "test/loss", "test/unigram_bpb", "val/bpb", "val/loss", "train/loss_step", "unigram_bpb"}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """One copy of every dataset fixture, in its official on-disk format."""
    root = tmp_path_factory.mktemp("task_data")
    write_aan(root / "aan")
    write_cifar10(root / "cifar", per_batch=4, n_test=6)
    write_pathfinder(root / "pathfinder32", n=24)
    enwik8, _ = write_enwik8(root / "enwik8", n=3000)
    return {
        "imdb": write_aclimdb(root / "imdb"), "aan": root / "aan", "cifar": root / "cifar",
        "pathfinder": root / "pathfinder32", "enwik8": enwik8,
        "train_csv": write_table(root / "topics" / "train.csv", TOPIC_DOCS),
        "test_csv": write_table(root / "topics" / "test.csv", TOPIC_TEST),
    }


def data_overrides(name: str, files: dict[str, Path]) -> list[str]:
    return {
        "listops": ["data=listops", "data.num_train=32", "data.num_val=8", "data.num_test=8", "data.min_length=10",
                    "data.max_length=40", "data.batch_size=8"],
        "lra_text": ["data=lra_text", f"data.path={files['imdb']}", "data.max_length=64", "data.val_fraction=0.2",
                     "data.batch_size=4"],
        "lra_retrieval": ["data=lra_retrieval", f"data.path={files['aan']}", "data.max_length=48", "data.batch_size=4"],
        "lra_image": ["data=lra_image", f"data.path={files['cifar']}", "data.batch_size=4"],
        "lra_pathfinder": ["data=lra_pathfinder", f"data.path={files['pathfinder']}", "data.batch_size=4"],
        "enwik8_stdlib": ["data=enwik8", "data.source=stdlib", "data.max_bytes=20000", "data.seq_len=32", "data.batch_size=4"],
        "enwik8_file": ["data=enwik8", "data.source=file", f"data.path={files['enwik8']}", "data.max_bytes=null",
                        "data.seq_len=32", "data.batch_size=4"],
        "text_classification": ["data=text_classification", f"data.train_file={files['train_csv']}",
                                f"data.test_file={files['test_csv']}", "data.max_length=48", "data.val_fraction=0.25",
                                "data.batch_size=4"],
    }[name]


CASES = [
    ("listops", "local_global", SequenceClassifier),
    ("lra_text", "full", SequenceClassifier),
    ("lra_image", "local_global", SequenceClassifier),
    ("lra_pathfinder", "lsh", SequenceClassifier),
    ("text_classification", "full", SequenceClassifier),
    ("lra_retrieval", "full", RetrievalClassifier),
    ("lra_retrieval", "lsh", RetrievalClassifier),
    ("lra_retrieval", "local_global", RetrievalClassifier),
    ("enwik8_stdlib", "full", CausalLM),
    ("enwik8_stdlib", "lsh", CausalLM),
    ("enwik8_stdlib", "local_global", CausalLM),
    ("enwik8_file", "lsh", CausalLM),
]


@pytest.mark.parametrize("dataset,attention,model_cls", CASES)
def test_fast_dev_run_every_dataset(compose_cfg, files, dataset, attention, model_cls, monkeypatch):
    seen = {}
    real_validate = validate_config

    def spy(cfg):
        dm, module = real_validate(cfg)
        seen["net"] = module.net
        return dm, module

    monkeypatch.setattr("longdoc.train.validate_config", spy)
    cfg = compose_cfg(*data_overrides(dataset, files), f"attention={attention}", *RUN, tiny=False)
    metrics = train(cfg)
    assert type(seen["net"]) is model_cls
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    expected = LM_KEYS if model_cls is CausalLM else CLASSIFIER_KEYS
    assert expected <= set(saved), sorted(expected - set(saved))
    assert all(math.isfinite(saved[k]) for k in expected)
    if model_cls is CausalLM:
        assert 0.0 < saved["test/bpb"] < 12.0 and abs(saved["test/bpb"] - saved["test/loss"] / math.log(2)) < 1e-4
        assert 0.0 < saved["unigram_bpb"] <= 8.0 and abs(saved["unigram_bpb"] - saved["test/unigram_bpb"]) < 1e-5
        assert "test/acc" not in saved and "majority_acc" not in saved
        written = OmegaConf.load(Path(cfg.paths.output_dir) / "config.yaml")
        assert written.attention.causal and written.callbacks.model_checkpoint.monitor == "val/bpb"
    else:
        assert 0.0 <= saved["test/acc"] <= 1.0 and 0.0 <= saved["majority_acc"] <= 1.0
    assert metrics["test/loss"] == saved["test/loss"]


# ------------------------------------------------------------------------------------------- config per task
def test_lm_turns_every_used_attention_causal_and_monitors_bpb(compose_cfg, caplog):
    cfg = compose_cfg("data=enwik8", "data.max_bytes=20000", "data.seq_len=64", "attention=lsh",
                      "model.attention_layers=[lsh,local_global]", *TINY_MODEL, tiny=False)
    assert not cfg.attention.causal and not cfg.attention_options.local_global.causal
    with caplog.at_level(logging.INFO, logger="longdoc"):
        _, module = validate_config(cfg)
    assert "task lm: attention.causal set to true for next-byte prediction" in caplog.text
    assert "task lm: attention_options.local_global.causal set to true" in caplog.text
    assert "attention.bucket_size=32 < data.seq_len=64" in caplog.text  # LSH's chunking caveat
    assert cfg.attention.causal and cfg.attention_options.local_global.causal
    assert all(block.attention.causal for block in module.net.encoder.blocks)
    assert [type(b.attention).__name__ for b in module.net.encoder.blocks] == ["LSHAttention", "LocalGlobalAttention"]
    assert (cfg.callbacks.model_checkpoint.monitor, cfg.callbacks.model_checkpoint.mode) == ("val/bpb", "min")
    assert cfg.optimized_metric == "val/bpb"  # the monitor follows the task's metric from composition on
    assert module.hparams.task == "lm" and module.hparams.config["attention"]["causal"] is True


def test_classifiers_keep_bidirectional_attention_and_accuracy_monitor(compose_cfg):
    cfg = compose_cfg()
    _, module = validate_config(cfg)
    assert not cfg.attention.causal and module.hparams.task == "classification"
    assert (cfg.callbacks.model_checkpoint.monitor, cfg.callbacks.model_checkpoint.mode) == ("val/acc", "max")
    cfg = compose_cfg("callbacks.model_checkpoint.monitor=val/bpb", "callbacks.model_checkpoint.mode=min")
    validate_config(cfg)  # the lm default on a classifier: switched back to accuracy
    assert cfg.callbacks.model_checkpoint.monitor == "val/acc" and cfg.callbacks.model_checkpoint.mode == "max"
    cfg = compose_cfg("callbacks.model_checkpoint.monitor=val/loss", "callbacks.model_checkpoint.mode=min")
    validate_config(cfg)
    assert cfg.callbacks.model_checkpoint.monitor == "val/loss"  # an explicit valid choice is kept


@pytest.mark.parametrize("overrides,message", [
    (["callbacks.model_checkpoint.monitor=val/loss"], r"mode=max selects the highest val/loss.*set callbacks.model_checkpoint.mode=min"),
    (["callbacks.model_checkpoint.monitor=val/token_acc"], r"monitor=val/token_acc is not logged for task classification; use one of \['val/acc', 'val/loss'\]"),
    (["data=enwik8", "data.seq_len=32", "callbacks.model_checkpoint.monitor=val/acc", "callbacks.model_checkpoint.mode=min"],
     r"monitor=val/acc is not logged for task lm"),
    (["data=enwik8", "data.seq_len=32", "optimized_metric=val/acc"], r"optimized_metric=val/acc is not a validation metric of task lm"),
    (["optimized_metric=test/acc"], r"optimized_metric=test/acc is not a validation metric of task classification"),
])
def test_checkpoint_monitor_errors(compose_cfg, overrides, message):
    tiny = not any(o.startswith("data=") for o in overrides)
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_cfg(*overrides, tiny=tiny))


def test_unknown_task_and_decay_are_errors():
    model = dict(d_model=16, n_heads=2, depth=1, d_ff=16, attention={"name": "full"}, position={"name": "none"})
    with pytest.raises(ValueError, match=r"task='ner' is unknown: choose one of \['classification', 'retrieval', 'lm', "
                                         r"'multilabel', 'token_classification', 'qa'\]"):
        LongDocModule(model=model, num_classes=2, vocab_size=10, max_seq_len=8, task="ner")
    with pytest.raises(ValueError, match=r"scheduler.decay='linear' is unknown: choose one of \['cosine', 'rsqrt', 'constant'\]"):
        LongDocModule(model=model, num_classes=2, vocab_size=10, max_seq_len=8, scheduler={"decay": "linear"})
    # checkpoints written before the task argument existed rebuild a classifier
    assert type(LongDocModule(model=model, num_classes=2, vocab_size=10, max_seq_len=8).net) is SequenceClassifier


def test_rsqrt_schedule_is_lras():
    """LRA: lr(s) = base * min(1, s / W) / sqrt(max(s, W)); normalised by its peak base / sqrt(W)."""
    w, base = 1000, 0.05
    for step in (0, 499, 999, 3999, 8999):
        s = step + 1
        lra = base * min(1.0, s / w) / math.sqrt(max(s, w))
        assert abs(warmup_rsqrt(step, warmup_steps=w) * base / math.sqrt(w) - lra) < 1e-12
    assert warmup_rsqrt(999, warmup_steps=w) == 1.0 and abs(warmup_rsqrt(3999, warmup_steps=w) - 0.5) < 1e-12


def test_constant_schedule_after_warmup():
    """Amos et al.'s constant_warmup: 1/W, 2/W, ... up to 1 at step W - 1, then 1 for ever (hand-computed)."""
    assert [warmup_constant(s, warmup_steps=4) for s in range(7)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]
    assert warmup_constant(0, warmup_steps=0) == 1.0
