"""model.init_from: the encoder of a longdoc checkpoint copied into a new model, exactly."""

import pytest
import torch

from longdoc.models import Encoder
from longdoc.models.init_from import ENCODER_PREFIX, freeze_embeddings, init_encoder_from, tile_rows

ATTN = {"name": "local_global", "attention_window": 4}


def _encoder(max_seq_len=64, vocab=20, position="learned", d_ff=32, seed=0):
    torch.manual_seed(seed)
    pos = {"name": position}
    return Encoder(vocab_size=vocab, d_model=16, n_heads=2, depth=2, d_ff=d_ff, attention=ATTN, position=pos,
                   max_seq_len=max_seq_len, dropout=0.0).eval()


def _save(tmp_path, encoder, extra=None):
    state = {ENCODER_PREFIX + k: v for k, v in encoder.state_dict().items()}
    state["net.head.weight"] = torch.ones(3, 16)  # a task head: never copied
    path = tmp_path / "pre.ckpt"
    torch.save({"state_dict": state, "global_step": 7, **(extra or {})}, path)
    return path


def test_every_encoder_tensor_is_copied_and_the_forward_is_the_pretrained_one(tmp_path):
    pre = _encoder(seed=0)
    path = _save(tmp_path, pre)
    new = _encoder(seed=1)
    assert not torch.equal(new.blocks[0].attention.in_proj.weight, pre.blocks[0].attention.in_proj.weight)
    report = init_encoder_from(new, path)
    assert set(report.loaded) == set(pre.state_dict()) and not report.left_at_init and not report.unused
    for k, v in pre.state_dict().items():
        assert torch.equal(new.state_dict()[k], v), k
    ids = torch.randint(2, 20, (2, 40))
    mask = torch.ones(2, 40, dtype=torch.bool)
    assert torch.equal(new(ids, mask), pre(ids, mask))


def test_run_directory_resolves_to_its_best_checkpoint(tmp_path):
    pre = _encoder()
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    path = _save(tmp_path, pre)
    path.rename(tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert init_encoder_from(_encoder(seed=3), tmp_path / "run").source.endswith("checkpoints/best.ckpt")
    # a self-pretraining run directory (experiment=spt/*): its finetune stage's checkpoint
    (tmp_path / "spt" / "finetune" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "best.ckpt").rename(tmp_path / "spt" / "finetune" / "checkpoints" / "best.ckpt")
    assert init_encoder_from(_encoder(seed=3), tmp_path / "spt").source == str(
        tmp_path / "spt" / "finetune" / "checkpoints" / "best.ckpt")


def test_learned_positions_extend_block_wise_only_on_request(tmp_path):
    pre = _encoder(max_seq_len=64)
    path = _save(tmp_path, pre)
    with pytest.raises(ValueError, match=r"position.weight has 64 positions .* needs 200 .*model.init_extend_positions=true"):
        init_encoder_from(_encoder(max_seq_len=200, seed=2), path)
    new = _encoder(max_seq_len=200, seed=2)
    report = init_encoder_from(new, path, extend_positions=True)
    assert report.extended == ["position.weight"]
    old = pre.position.weight
    for start in (0, 64, 128):  # each block of 64 new positions is a copy of the pretrained table
        stop = min(start + 64, 200)
        assert torch.equal(new.position.weight[start:stop], old[: stop - start])


def test_axial_tables_extend_by_their_own_rows(tmp_path):
    pre = _encoder(max_seq_len=64, position="axial")
    path = _save(tmp_path, pre)
    new = _encoder(max_seq_len=256, position="axial", seed=5)
    report = init_encoder_from(new, path, extend_positions=True)
    assert report.extended  # at least one axial factor grew
    for name in ("e1", "e2"):
        got, src = getattr(new.position, name), getattr(pre.position, name)
        assert torch.equal(got, torch.cat([src] * -(-got.shape[0] // src.shape[0]))[: got.shape[0]])


def test_extra_token_rows_of_the_pretraining_vocabulary_are_cut(tmp_path):
    pre = _encoder(vocab=21)  # + a [MASK] id appended by the MLM objective
    path = _save(tmp_path, pre)
    new = _encoder(vocab=20, seed=4)
    report = init_encoder_from(new, path)
    assert report.truncated == ["token_embedding.weight"]
    assert torch.equal(new.token_embedding.weight, pre.token_embedding.weight[:20])


def test_mismatched_checkpoint_names_the_tensor(tmp_path):
    path = _save(tmp_path, _encoder(d_ff=32))
    with pytest.raises(ValueError, match=r"blocks.0.feed_forward.net.0.weight is \(32, 16\) .* but \(48, 16\)"):
        init_encoder_from(_encoder(d_ff=48), path)


class _Evil:
    def __reduce__(self):
        return (print, ("this ran",))


def test_a_checkpoint_that_needs_code_to_load_is_refused(tmp_path):
    path = _save(tmp_path, _encoder(), extra={"evil": _Evil()})
    with pytest.raises(ValueError, match=r"weights_only=True.*runs no code"):
        init_encoder_from(_encoder(), path)
    with pytest.raises(FileNotFoundError, match="model.init_from='.*nope' does not exist"):
        init_encoder_from(_encoder(), tmp_path / "nope")


def test_freeze_embeddings_stops_their_gradients():
    enc = _encoder()
    names = freeze_embeddings(enc)
    assert names == ["token_embedding.weight", "position.weight"]
    assert all(p.requires_grad for n, p in enc.named_parameters() if n not in names)


def test_tile_rows_hand_example():
    t = torch.tensor([[1.0], [2.0], [3.0]])
    assert tile_rows(t, 7).flatten().tolist() == [1, 2, 3, 1, 2, 3, 1]


def test_fine_tuning_starts_from_a_real_mlm_checkpoint(compose_cfg, tmp_path):
    """A real two-stage run: MLM self-pretraining on ListOps, then classification from its encoder (one more token
    row in the pretrained embedding: the [MASK] id), with a 10x lower encoder learning rate."""
    from pathlib import Path

    from longdoc.train import train, validate_config

    pre_cfg = compose_cfg("task=mlm", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                          "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0", "trainer.accelerator=cpu",
                          "test=false", "attention=lsh")
    train(pre_cfg)
    pre_run = Path(pre_cfg.paths.output_dir)
    pre_state = torch.load(pre_run / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]

    cfg = compose_cfg(f"model.init_from={pre_run}", "optimizer.encoder_lr_ratio=0.1", "attention=lsh",
                      f"paths.output_dir={tmp_path / 'ft'}")
    _, module = validate_config(cfg)
    own = module.net.encoder.state_dict()
    for k, v in own.items():
        src = pre_state[ENCODER_PREFIX + k]
        assert torch.equal(v, src[: v.shape[0]] if k == "token_embedding.weight" else src), k
    cfg.trainer.max_epochs, cfg.trainer.limit_train_batches, cfg.trainer.limit_val_batches = 1, 2, 1
    cfg.trainer.num_sanity_val_steps, cfg.trainer.accelerator, cfg.test = 0, "cpu", False
    cfg.trainer.log_every_n_steps = 1
    train(cfg)
    import csv

    with open(tmp_path / "ft" / "csv" / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("lr-AdamW/pg1")]
    # groups: encoder (decay, no decay) at lr * 0.1, then the head (decay, no decay) at lr
    for r in rows:
        enc, head = float(r["lr-AdamW/pg1"]), float(r["lr-AdamW/pg3"])
        assert enc == pytest.approx(0.1 * head) and float(r["lr-AdamW/pg2"]) == pytest.approx(enc)
    bad = compose_cfg(f"model.init_from={pre_run}", "model.d_ff=48", "attention=lsh")
    from longdoc.config import ConfigError

    with pytest.raises(ConfigError, match=r"blocks.0.feed_forward.net.0.weight is \(64, 32\) .* but \(48, 32\)"):
        validate_config(bad)
