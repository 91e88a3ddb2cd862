"""evaluation.checkpoint: the one checkpoint reader of every evaluate.py mode names the file it cannot use."""

import pytest
import torch

from longdoc.evaluate import evaluate
from longdoc.evaluation.checkpoint import load_module, read_checkpoint


def test_missing_truncated_and_foreign_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ckpt_path='.*nope.ckpt' does not exist; pass a file written by"):
        read_checkpoint(tmp_path / "nope.ckpt")
    bad = tmp_path / "truncated.ckpt"
    torch.save({"hyper_parameters": {}, "state_dict": {"w": torch.zeros(1000)}}, bad)
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(ValueError, match=rf"checkpoint {bad} cannot be read .*truncated"):
        load_module(bad)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match=rf"checkpoint {foreign} has no 'hyper_parameters' / 'state_dict'"):
        read_checkpoint(foreign)


@pytest.mark.parametrize("mode", ["metrics", "attention_pattern", "efficiency"])
def test_every_mode_reads_checkpoints_the_same_way(compose_cfg, tmp_path, mode):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=rf"checkpoint {bad} cannot be read"):
        evaluate(compose_cfg(f"mode={mode}", f"ckpt_path={bad}", config_name="evaluate"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate(compose_cfg(f"mode={mode}", f"ckpt_path={tmp_path / 'missing.ckpt'}", config_name="evaluate"))
