"""load_longformer / save_longformer against transformers' own LongformerModel (float32, 1e-5)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.pretrained.hf_reference import batch, save_longformer_reference, transformers

from longdoc.pretrained import load_longformer, save_longformer

TOL = 1e-5


def _global(b: int, n: int, rows: dict[int, list[int]]) -> torch.Tensor:
    g = torch.zeros(b, n, dtype=torch.long)
    for row, cols in rows.items():
        g[row, cols] = 1
    return g


def _compare(hf_model, encoder, ids, mask, glob):
    with torch.no_grad():
        ref = hf_model(input_ids=ids, attention_mask=mask, global_attention_mask=glob).last_hidden_state
        out = encoder(ids, mask.bool(), glob.bool())
    real = mask.bool()
    assert out.shape == ref.shape
    return (out - ref)[real].abs().max().item()


@pytest.mark.parametrize("n", [23, 37])
def test_load_longformer_matches_transformers_with_padding_globals_and_ragged_lengths(tmp_path, n):
    # per-layer two-sided windows 4, 8, 4 (one-sided 2, 4, 2); n is not a multiple of any window, so HF pads
    # internally; rows with padding, with several global tokens, one global token and none
    hf = save_longformer_reference(tmp_path, windows=(4, 8, 4))
    encoder = load_longformer(tmp_path).eval()
    assert [b.attention.attention_window for b in encoder.blocks] == [2, 4, 2]
    assert all(b.attention.separate_global_projections for b in encoder.blocks)
    ids, mask = batch(4, n, pad_id=1, lengths=[n, n - 5, 9, n - 1])
    glob = _global(4, n, {0: [0], 1: [0, 5, 10], 2: [3, 8]})
    assert _compare(hf, encoder, ids, mask, glob) < TOL


def test_longformer_for_masked_lm_bin_checkpoint_loads_without_running_code(tmp_path):
    # LongformerForMaskedLM saved as pytorch_model.bin: the longformer. prefix is stripped, lm_head is unused, and the
    # pickle is read with torch.load(weights_only=True)
    hf = save_longformer_reference(tmp_path, windows=(6, 6), masked_lm=True, safe_serialization=False)
    assert (tmp_path / "pytorch_model.bin").is_file() and not (tmp_path / "model.safetensors").exists()
    encoder = load_longformer(tmp_path).eval()
    ids, mask = batch(2, 19, pad_id=1, lengths=[19, 12])
    glob = _global(2, 19, {0: [0, 4], 1: [0]})
    assert _compare(hf.longformer, encoder, ids, mask, glob) < TOL


def test_save_longformer_round_trips_through_transformers(tmp_path):
    hf = save_longformer_reference(tmp_path / "src", windows=(4, 8))
    encoder = load_longformer(tmp_path / "src").eval()
    out_dir = save_longformer(encoder, tmp_path / "out")
    config = json.loads((out_dir / "config.json").read_text())
    assert config["attention_window"] == [4, 8] and config["model_type"] == "longformer"
    again = transformers.LongformerModel.from_pretrained(out_dir).eval()
    ids, mask = batch(3, 30, pad_id=1, lengths=[30, 21, 2])
    glob = _global(3, 30, {0: [0, 7, 29], 1: [1]})
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, global_attention_mask=glob).last_hidden_state
        got = again(input_ids=ids, attention_mask=mask, global_attention_mask=glob).last_hidden_state
    assert (got - ref)[mask.bool()].abs().max().item() < TOL
    # and longdoc reads its own export back
    assert _compare(hf, load_longformer(out_dir).eval(), ids, mask, glob) < TOL
