"""Every experiment preset composes and passes validate_config without any data on disk; the LRA presets carry
LRA's published settings; missing data then fail with an error naming the key to set."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest

from longdoc.train import validate_config
from longdoc.data import DataNotFoundError
from longdoc.models import CausalLM, RetrievalClassifier, SequenceClassifier

from .conftest import CONF_DIR

EXPERIMENTS = sorted(p.relative_to(Path(CONF_DIR) / "experiment").with_suffix("").as_posix()
                     for p in (Path(CONF_DIR) / "experiment").rglob("*.yaml"))

# (model class, d_model, n_heads, depth, d_ff, batch size, max_steps, optimizer.lr, weight decay, decay, warmup)
LRA = {
    "lra/listops": (SequenceClassifier, 512, 8, 6, 2048, 32, 5000, 0.05 / 1000**0.5, 0.1, "rsqrt", 1000),
    "lra/text": (SequenceClassifier, 256, 4, 4, 1024, 32, 20000, 0.05 / 8000**0.5, 0.1, "rsqrt", 8000),
    "lra/retrieval": (RetrievalClassifier, 128, 4, 4, 512, 32, 5000, 0.05 / 8000**0.5, 0.1, "rsqrt", 8000),
    "lra/image": (SequenceClassifier, 32, 1, 1, 64, 256, 35000, 5e-4, 0.0, "cosine", 175),
    "lra/pathfinder": (SequenceClassifier, 128, 4, 1, 128, 512, 62400, 1e-3, 0.0, "cosine", 312),
}


def test_every_preset_is_listed():
    spt = {f"spt/{t}" for t in ("listops", "stdlib_packages", "text", "retrieval", "image", "pathfinder")}
    assert set(LRA) | {"lm/stdlib", "listops_lsh_deep"} | spt == set(EXPERIMENTS)  # spt: tests/test_spt.py


@pytest.mark.parametrize("name", sorted(LRA))
def test_lra_presets_compose_validate_and_name_the_missing_data(compose_cfg, name, tmp_path):
    cfg = compose_cfg(f"experiment={name}", "attention=lsh", tiny=False)
    datamodule, module = validate_config(cfg)  # builds objects only: no data are read or downloaded
    cls, d, h, depth, ff, bsz, steps, lr, wd, decay, warmup = LRA[name]
    assert type(module.net) is cls and cfg.task_name == name.replace("/", "_")
    assert (cfg.model.d_model, cfg.model.n_heads, cfg.model.depth, cfg.model.d_ff) == (d, h, depth, ff)
    assert (cfg.data.batch_size, cfg.trainer.max_steps, cfg.trainer.max_epochs, cfg.trainer.max_time) == (bsz, steps, -1, None)
    assert abs(cfg.optimizer.lr - lr) < 1e-7 and cfg.optimizer.weight_decay == wd and cfg.optimizer.eps == 1e-9
    assert (cfg.scheduler.decay, cfg.scheduler.warmup_steps) == (decay, warmup)
    assert not cfg.attention.causal and cfg.callbacks.model_checkpoint.monitor == "val/acc"
    if name == "lra/listops":
        assert datamodule.max_seq_len == 2001  # generated locally: nothing to be missing
        return
    missing = tmp_path / "missing"
    missing.mkdir()
    dm = hydra.utils.instantiate(cfg.data, path=str(missing))
    with pytest.raises(DataNotFoundError, match=r"data\.path"):
        dm.prepare_data()
        dm.setup()


@pytest.mark.parametrize("attention", ["full", "lsh", "local_global"])
def test_lm_preset_with_each_attention(compose_cfg, attention):
    cfg = compose_cfg("experiment=lm/stdlib", f"attention={attention}", tiny=False)
    _, module = validate_config(cfg)
    assert type(module.net) is CausalLM and module.net.tie_word_embeddings
    assert all(b.attention.causal for b in module.net.encoder.blocks)
    assert (cfg.callbacks.model_checkpoint.monitor, cfg.callbacks.model_checkpoint.mode) == ("val/bpb", "min")
    assert cfg.data.source == "stdlib" and cfg.trainer.max_time == "00:00:10:00"
