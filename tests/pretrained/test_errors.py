"""Clear errors for what longdoc.pretrained cannot or will not load."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.pretrained.hf_reference import save_bert_reference, save_longformer_reference

from longdoc.pretrained import CheckpointError, load_longformer, make_long, save_longformer


class Payload:
    """Unpickling this would create a file: a checkpoint that needs code to load."""

    def __init__(self, sentinel: pathlib.Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (pathlib.Path.touch, (self.sentinel,))


def test_a_directory_that_is_not_a_checkpoint_names_the_files_found_and_expected(tmp_path):
    (tmp_path / "README.md").write_text("hi")
    (tmp_path / "tf_model.h5").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no config\.json.*README\.md, tf_model\.h5.*expected config\.json and "
                                              r"model\.safetensors"):
        load_longformer(tmp_path)
    with pytest.raises(CheckpointError, match="not a directory"):
        make_long(tmp_path / "missing")


def test_the_wrong_kind_is_refused_with_the_right_function(tmp_path):
    save_bert_reference(tmp_path / "bert")
    save_longformer_reference(tmp_path / "lf", windows=(4, 4))
    with pytest.raises(CheckpointError, match="model_type='bert', not a longformer checkpoint.*kind=bert"):
        load_longformer(tmp_path / "bert")
    with pytest.raises(CheckpointError, match="Longformer checkpoint, long already: load it with load_longformer"):
        make_long(tmp_path / "lf")


@pytest.mark.parametrize("key, value, match", [
    ("hidden_act", "relu", "hidden_act='relu' cannot be represented"),
    ("position_embedding_type", "relative_key", "position_embedding_type='relative_key' cannot be represented"),
    ("is_decoder", True, "is_decoder=true cannot be represented"),
])
def test_a_config_the_encoder_cannot_represent(tmp_path, key, value, match):
    save_bert_reference(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg[key] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=match):
        make_long(tmp_path)


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    save_bert_reference(tmp_path)
    file = tmp_path / "model.safetensors"
    state = load_file(str(file))
    save_file({**state, "encoder.layer.0.attention.self.rotary.weight": torch.zeros(2)}, str(file))
    with pytest.raises(CheckpointError, match=r"1 tensors have no place.*encoder\.layer\.0\.attention\.self\.rotary"):
        make_long(tmp_path)
    del state["encoder.layer.1.output.LayerNorm.bias"]
    save_file(state, str(file))
    with pytest.raises(CheckpointError, match=r"lacks 1 tensors.*encoder\.layer\.1\.output\.LayerNorm\.bias"):
        make_long(tmp_path)


def test_a_pickle_that_needs_code_is_refused_and_its_code_never_runs(tmp_path):
    save_bert_reference(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors").unlink()
    sentinel = tmp_path / "code-ran"
    torch.save({**state, "extra": Payload(sentinel)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"weights_only=True.*longdoc runs no code from a checkpoint"):
        make_long(tmp_path)
    assert not sentinel.exists()


def test_save_longformer_refuses_an_encoder_it_cannot_represent(tmp_path):
    from longdoc.models import Encoder

    pre_norm = Encoder(vocab_size=20, d_model=16, n_heads=2, depth=1, d_ff=32, max_seq_len=32,
                       attention={"name": "local_global", "attention_window": 4}, position={"name": "learned"})
    with pytest.raises(CheckpointError, match="needs a post-norm encoder with an embedding LayerNorm"):
        save_longformer(pre_norm, tmp_path)
    causal = Encoder(vocab_size=20, d_model=16, n_heads=2, depth=1, d_ff=32, max_seq_len=32, norm_position="post",
                     embedding_layer_norm=True, position={"name": "learned"},
                     attention={"name": "local_global", "attention_window": 4, "causal": True})
    with pytest.raises(CheckpointError, match="block 0: save_longformer needs bidirectional, undilated"):
        save_longformer(causal, tmp_path)
