"""make_long (allenai's convert_model_to_long recipe) against transformers' BertModel / RobertaModel (float32, 1e-5),
and the made-long encoder exported to transformers' LongformerModel."""

from __future__ import annotations

import pytest
import torch

from tests.pretrained.hf_reference import batch, save_bert_reference, transformers

from longdoc.pretrained import make_long, save_longformer

TOL = 1e-5
PAD = {"bert": 0, "roberta": 1}


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_made_long_model_computes_the_original_within_its_positions(tmp_path, kind):
    # 40 original positions made 200 long; a window of 64 covers every input of <= 40 tokens, so the local_global
    # encoder with its CLS (and one more) global token must give the original model's hidden states
    hf = save_bert_reference(tmp_path, kind=kind, max_positions=40)
    encoder = make_long(tmp_path, max_positions=200, attention_window=64).eval()
    ids, mask = batch(3, 40, pad_id=PAD[kind], lengths=[40, 31, 6])
    glob = torch.zeros(3, 40, dtype=torch.bool)
    glob[:, 0] = True
    glob[1, 4] = True
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        out = encoder(ids, mask.bool(), glob)
    assert (out - ref)[mask.bool()].abs().max().item() < TOL


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_positions_are_copied_block_wise(tmp_path, kind):
    hf = save_bert_reference(tmp_path, kind=kind, max_positions=40)
    encoder = make_long(tmp_path, max_positions=100, attention_window=8)
    old = hf.embeddings.position_embeddings.weight.detach()
    new = encoder.position.weight.detach()
    offset = 0 if kind == "bert" else 2  # RoBERTa keeps its padding_idx + 1 rows in front (allenai's 4096 + 2)
    assert new.shape[0] == 100 + offset
    assert torch.equal(new[:offset], old[:offset])
    for pos in (0, 39, 40, 41, 85, 99):
        assert torch.equal(new[offset + pos], old[offset + pos % 40])
    for block in encoder.blocks:  # global projections start as the local ones
        assert torch.equal(block.attention.in_proj_global.weight, block.attention.in_proj.weight)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_made_long_encoder_exports_to_transformers_longformer(tmp_path, kind):
    # beyond the original 40 positions, against transformers' LongformerModel built from the exported weights
    save_bert_reference(tmp_path / "src", kind=kind, max_positions=40)
    encoder = make_long(tmp_path / "src", max_positions=160, attention_window=8).eval()
    hf = transformers.LongformerModel.from_pretrained(save_longformer(encoder, tmp_path / "long")).eval()
    ids, mask = batch(2, 150, pad_id=PAD[kind], lengths=[150, 97])
    glob = torch.zeros(2, 150, dtype=torch.long)
    glob[:, 0] = 1
    glob[0, 77] = 1
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, global_attention_mask=glob).last_hidden_state
        out = encoder(ids, mask.bool(), glob.bool())
    assert (out - ref)[mask.bool()].abs().max().item() < TOL
