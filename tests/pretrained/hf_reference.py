"""Small, randomly initialised HuggingFace models saved to a directory: the independent references of the
longdoc.pretrained tests (transformers computes every expected output)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.data.fixtures import VOCAB, save_word_tokenizer

transformers = pytest.importorskip("transformers", reason="the references of these tests are transformers' models")



def small_sizes(**kw) -> dict:
    """Sizes shared by the test models: d=32, 4 heads, d_ff=64, initializer_range 0.2 (large weights, so that
    attention is sharp and any masking error shows)."""
    return {"vocab_size": VOCAB, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64,
            "initializer_range": 0.2, **kw}


def randomise_norms(model: torch.nn.Module, seed: int = 1) -> None:
    """LayerNorm weights / biases away from HF's 1 / 0 init, so that a swapped or skipped LayerNorm shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))


def save_longformer_reference(path: Path, *, windows=(4, 8, 4), max_positions=64, masked_lm=False,
                              safe_serialization=True, seed=0):
    """A random HF Longformer (pad 1, per-layer two-sided ``windows``; HF pads to a multiple of the largest, which
    each must divide) saved to ``path``; returns it in eval mode."""
    torch.manual_seed(seed)
    cfg = transformers.LongformerConfig(**small_sizes(num_hidden_layers=len(windows), attention_window=list(windows),
                                                      max_position_embeddings=max_positions + 2, pad_token_id=1,
                                                      layer_norm_eps=1e-5, type_vocab_size=1))
    cls = transformers.LongformerForMaskedLM if masked_lm else transformers.LongformerModel
    model = cls(cfg)
    randomise_norms(model, seed + 1)
    model.save_pretrained(path)
    if not safe_serialization:  # transformers 5 writes safetensors only: the pickle of older checkpoints, by hand
        (path / "model.safetensors").unlink()
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    return model.eval()


def save_bert_reference(path: Path, *, kind="bert", depth=2, max_positions=40, seed=0, tokenizer=False):
    """A random HF BertModel (pad 0, eps 1e-12) or RobertaModel (pad 1, offset positions, eps 1e-5) saved to
    ``path`` (+ a word-level ``tokenizer.json`` with ``tokenizer``); returns it in eval mode."""
    torch.manual_seed(seed)
    if kind == "bert":
        cfg = transformers.BertConfig(**small_sizes(num_hidden_layers=depth, max_position_embeddings=max_positions))
        model = transformers.BertModel(cfg)
    else:
        cfg = transformers.RobertaConfig(**small_sizes(num_hidden_layers=depth, max_position_embeddings=max_positions + 2,
                                                       pad_token_id=1, layer_norm_eps=1e-5, type_vocab_size=1))
        model = transformers.RobertaModel(cfg)
    randomise_norms(model, seed + 1)
    model.save_pretrained(path)
    if tokenizer:
        save_word_tokenizer(path / "tokenizer.json")
    return model.eval()


def batch(b: int, n: int, *, pad_id: int, lengths=None, seed=0):
    """Random ids (B, N) int64 right-padded with ``pad_id`` to ``lengths`` and the HF attention mask (B, N) int64."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (b, n), generator=g)
    mask = torch.ones(b, n, dtype=torch.long)
    for row, length in enumerate(lengths or []):
        mask[row, length:] = 0
    ids[mask == 0] = pad_id
    return ids, mask
