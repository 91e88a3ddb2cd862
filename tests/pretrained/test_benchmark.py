"""benchmarks/pretrained.py at toy sizes: the speed table (longdoc vs transformers' LongformerModel on the same
converted weights, which must agree) and the from-scratch arm of the fine-tuning comparison building the same
encoder as the pretrained arm."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

from tests.pretrained.hf_reference import save_bert_reference

from longdoc.train import validate_config

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("bench_pretrained", ROOT / "benchmarks" / "pretrained.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speed_table_compares_the_same_function(tmp_path):
    save_bert_reference(tmp_path / "ckpt", max_positions=40)
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pretrained.py"), "speed", "--checkpoint",
                           str(tmp_path / "ckpt"), "--lengths", "48", "96", "--attention-window", "8", "--repeats", "1",
                           "--warmup", "0", "--threads", "1", "--out", str(tmp_path / "out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "pretrained_speed.json").read_text())
    assert {(r["model"], r["n"], r["mode"]) for r in result["rows"]} == {
        (m, n, mode) for m in ("longdoc", "hf-longformer") for n in (48, 96) for mode in ("infer", "train")}
    assert all(r["tokens_per_s"] > 0 and r["max_abs_diff"] < 1e-5 for r in result["rows"])
    assert "| 96 | train |" in (tmp_path / "out" / "pretrained_speed.md").read_text()


def test_the_scratch_arm_builds_the_pretrained_arms_encoder_without_its_weights(compose_cfg, tmp_path):
    path = tmp_path / "ckpt"
    save_bert_reference(path, max_positions=40, tokenizer=True)
    common = ["data=stdlib_packages", "data.max_length=30", "data.max_files_per_class=20"]
    pretrained = compose_cfg(*common, "model=pretrained", f"model.pretrained.path={path}",
                             "model.pretrained.max_positions=64", "model.pretrained.attention_window=8", tiny=False)
    scratch = compose_cfg(*common, *_script().architecture_overrides(str(path), 64, 8), tiny=False)
    (_, a), (_, b) = validate_config(pretrained), validate_config(scratch)
    sa, sb = a.net.encoder.state_dict(), b.net.encoder.state_dict()
    assert {k: v.shape for k, v in sa.items()} == {k: v.shape for k, v in sb.items()}
    assert a.hparams.model["norm_position"] == b.hparams.model["norm_position"] == "post"
    assert not torch.equal(sa["token_embedding.weight"], sb["token_embedding.weight"])
