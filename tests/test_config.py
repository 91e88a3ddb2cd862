"""Every config group composes and instantiates; every invalid setting fails before training with its key named."""

import hydra
import pytest
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from longdoc.attention import FullAttention, LocalGlobalAttention, LSHAttention
from longdoc.config import ConfigError
from longdoc.train import validate_config
from longdoc.embeddings import AxialPositionalEmbedding, LearnedPositionalEmbedding, SinusoidalPositionalEmbedding


@pytest.mark.parametrize("choice,cls", [("full", FullAttention), ("lsh", LSHAttention), ("local_global", LocalGlobalAttention)])
def test_attention_group_swaps_only_the_attention(compose_cfg, choice, cls):
    cfg = compose_cfg(f"attention={choice}")
    _, module = validate_config(cfg)
    assert all(isinstance(b.attention, cls) for b in module.net.encoder.blocks)
    assert cfg.model.d_model == 32 and cfg.data.num_train == 160  # nothing else moved


def test_attention_hyperparameters_are_overridable(compose_cfg):
    cfg = compose_cfg("attention=lsh", "attention.n_hashes=4", "attention.bucket_size=16")
    _, module = validate_config(cfg)
    attn = module.net.encoder.blocks[0].attention
    assert (attn.n_hashes, attn.bucket_size) == (4, 16)


@pytest.mark.parametrize("choice,cls", [("axial", AxialPositionalEmbedding), ("learned", LearnedPositionalEmbedding),
                                        ("sinusoidal", SinusoidalPositionalEmbedding), ("none", type(None))])
def test_position_group(compose_cfg, choice, cls):
    _, module = validate_config(compose_cfg(f"position={choice}"))
    assert isinstance(module.net.encoder.position, cls)


@pytest.mark.parametrize("group,choice", [("trainer", "default"), ("trainer", "cpu"), ("trainer", "gpu"),
                                          ("logger", "csv"), ("logger", "tensorboard"), ("logger", "wandb"),
                                          ("logger", "many"), ("logger", "csv_mlflow"), ("data", "listops"), ("data", "listops_lra"),
                                          ("experiment", "listops_lsh_deep")])
def test_other_groups_compose_and_instantiate(compose_cfg, group, choice, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    overrides = [f"{group}={choice}"] if group != "experiment" else [f"experiment={choice}"]
    if choice == "listops_lra":
        cfg = compose_cfg(*overrides, tiny=False)
        dm = hydra.utils.instantiate(cfg.data)  # no data work in the constructor
        assert dm.max_seq_len == 2001 and cfg.data.num_train == 96000
        return
    cfg = compose_cfg(*overrides)
    if group == "trainer":
        assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
        if choice != "gpu":
            hydra.utils.instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    elif group == "logger":
        loggers = [hydra.utils.instantiate(c) for c in cfg.logger.values()]
        assert loggers
    else:
        validate_config(cfg)
        if group == "experiment":
            assert cfg.attention.name == "lsh" and cfg.attention.n_hashes == 4  # (depth: the command line wins)


def test_callbacks_instantiate(compose_cfg):
    cfg = compose_cfg()
    cbs = [hydra.utils.instantiate(c) for c in cfg.callbacks.values() if c is not None]
    assert {type(c).__name__ for c in cbs} >= {"ModelCheckpoint", "LearningRateMonitor", "ThroughputMonitor"}


INVALID = [
    (["position.axial_shape=[4,4]"], r"position.axial_shape=\[4, 4\] covers 16 positions but the longest sequence has 61"),
    (["position.axial_dims=[10,10]"], r"position.axial_dims=\[10, 10\] sums to 20 but model.d_model=32"),
    (["model.n_heads=3"], r"model.n_heads=3 does not divide model.d_model=32"),
    (["attention=lsh", "attention.bucket_size=0"], r"attention.bucket_size must be a positive integer \(or a list of them, one per layer\), got 0"),
    (["attention=lsh", "attention.n_hashes=-2"], r"attention.n_hashes must be a positive integer \(or a list of them, one per layer\), got -2"),
    (["attention=local_global", "attention.attention_window=0"], r"attention.attention_window must be a positive integer"),
    (["attention.name=sparse"], r"attention.name='sparse' is unknown: choose one of \['full', 'local_global', 'lsh'\]"),
    (["data.min_length=80", "data.max_length=60"], r"min_length"),
]


@pytest.mark.parametrize("overrides,message", INVALID)
def test_invalid_configs_fail_before_training(compose_cfg, overrides, message, tmp_path):
    cfg = compose_cfg(*overrides, f"paths.data_dir={tmp_path / 'data'}")
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)
    assert not any((tmp_path / "data").glob("**/*.tsv")), "no data work before the config is valid"


def test_unknown_attention_group_fails_at_composition(compose_cfg):
    with pytest.raises(MissingConfigException, match="attention/sparse"):
        compose_cfg("attention=sparse")


def test_config_keys_match_constructor_arguments(compose_cfg):
    """Each attention config's keys (except the registry name) are constructor arguments, one to one."""
    import inspect

    from longdoc.attention import ATTENTION_REGISTRY

    for name, cls in ATTENTION_REGISTRY.items():
        cfg = compose_cfg(f"attention={name}")
        keys = set(OmegaConf.to_container(cfg.attention)) - {"name"}
        params = set(inspect.signature(cls.__init__).parameters) - {"self"}
        assert keys <= params, (name, keys - params)


def test_per_layer_attention_mixing_and_lists(compose_cfg):
    from longdoc.attention import LocalGlobalAttention, LSHAttention

    cfg = compose_cfg("model.depth=3", "model.attention_layers=[local_global,lsh]", "attention=lsh",
                      "attention.n_hashes=3", "attention_options.local_global.attention_window=[4,8,16]")
    _, module = validate_config(cfg)
    blocks = [b.attention for b in module.net.encoder.blocks]
    assert [type(b) for b in blocks] == [LocalGlobalAttention, LSHAttention, LocalGlobalAttention]
    assert blocks[1].n_hashes == 3  # the selected attention's overrides win for its own type
    assert (blocks[0].attention_window, blocks[2].attention_window) == (4, 16)  # one value per layer
    bad = compose_cfg("model.depth=3", "attention.attention_window=[4,8]")
    with pytest.raises(ConfigError, match=r"attention.attention_window=\[4, 8\] has 2 entries but model.depth=3"):
        validate_config(bad)


#: The values a new user tried (the typed-configuration issue): each fails before any data work, naming the key,
#: the rule and an example fix.
TYPED_INVALID = [
    (["optimizer.lr=-1"], r"optimizer.lr must be > 0, got -1; e.g. optimizer.lr=1e-3"),
    (["optimizer.lr=0"], r"optimizer.lr must be > 0, got 0; e.g. optimizer.lr=1e-3"),
    (["optimizer.weight_decay=-1"], r"optimizer.weight_decay must be >= 0, got -1; e.g. optimizer.weight_decay=0.01"),
    (["trainer.max_epochs=abc"], r"trainer.max_epochs: .*'abc'.*e.g. trainer.max_epochs="),
    (["model.dropout=1.5"], r"model.dropout must be a probability in \[0, 1\), got 1.5; e.g. model.dropout=0.1"),
    (["attention.dropout=[0.1,2.0]"], r"attention.dropout must be a probability in \[0, 1\), got \[0.1, 2.0\]"),
    (["trainer.precision=fp8"], r"trainer.precision='fp8' is unknown: choose one of"),
    (["optimizer.betas=[0.9]"], r"optimizer.betas must be two values in \[0, 1\), got \[0.9\]"),
    (["scheduler.warmup_ratio=1.5"], r"scheduler.warmup_ratio must be in \[0, 1\), got 1.5"),
    (["trainer.accumulate_grad_batches=0"], r"trainer.accumulate_grad_batches must be >= 1, got 0"),
]


@pytest.mark.parametrize("overrides,message", TYPED_INVALID)
def test_typed_values_fail_at_composition_naming_key_and_fix(compose_cfg, overrides, message, tmp_path):
    from longdoc.train import train

    cfg = compose_cfg(*overrides, f"paths.data_dir={tmp_path / 'data'}")
    with pytest.raises(ConfigError, match=message):
        train(cfg)  # the whole job: it would generate ListOps under paths.data_dir if it got that far
    assert not (tmp_path / "data").exists(), "no data work before the config is valid"


def test_progress_bar_off_drops_its_callback_with_a_log_line(compose_cfg, caplog):
    import logging

    from longdoc.train import train

    cfg = compose_cfg("trainer.enable_progress_bar=false", "callbacks.progress_bar={_target_: "
                      "pytorch_lightning.callbacks.RichProgressBar}", "trainer.fast_dev_run=true",
                      "trainer.accelerator=cpu")
    with caplog.at_level(logging.INFO, logger="longdoc"):
        metrics = train(cfg)  # Lightning would refuse RichProgressBar beside enable_progress_bar=False
    assert "trainer.enable_progress_bar=false: callbacks.progress_bar dropped too" in caplog.text
    assert cfg.callbacks.progress_bar is None and 0 <= metrics["test/acc"] <= 1
