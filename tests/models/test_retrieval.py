"""Two-tower retrieval model (LRA section 3.3): one encoder for both documents, head on [u, v, u*v, u-v]."""

import pytest
import torch

from longdoc.models import Encoder, RetrievalClassifier, RetrievalHead

ENC = dict(vocab_size=30, d_model=16, n_heads=2, depth=2, d_ff=32, dropout=0.0, max_seq_len=20,
           attention={"name": "full"}, position={"name": "axial"})


def model_and_inputs(pooling="cls", interaction="nli"):
    torch.manual_seed(0)
    model = RetrievalClassifier(num_classes=2, pooling=pooling, interaction=interaction, **ENC).double().eval()
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randint(2, 30, (3, 12), generator=gen), torch.randint(2, 30, (3, 17), generator=gen)
    pa, pb = torch.ones_like(a, dtype=torch.bool), torch.ones_like(b, dtype=torch.bool)
    pa[0, 7:] = False
    pb[2, 9:] = False
    return model, (a, pa), (b, pb)


def head_input(model, *args):
    seen = []
    hook = model.head.mlp[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    with torch.no_grad():
        logits = model(*args)
    hook.remove()
    return seen[0], logits


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_head_input_is_u_v_product_difference(pooling):
    model, (a, pa), (b, pb) = model_and_inputs(pooling)
    feats, logits = head_input(model, a, pa, None, b, pb, None)
    with torch.no_grad():  # u, v recomputed independently from the encoder's outputs
        h1, h2 = model.encoder(a, pa), model.encoder(b, pb)
    if pooling == "cls":
        u, v = h1[:, 0], h2[:, 0]
    else:
        u = torch.stack([h1[i, pa[i]].mean(0) for i in range(3)])
        v = torch.stack([h2[i, pb[i]].mean(0) for i in range(3)])
    torch.testing.assert_close(feats, torch.cat([u, v, u * v, u - v], dim=-1))
    assert logits.shape == (3, 2)
    # swapping the towers' inputs swaps u and v, keeps u*v and negates u-v: nothing else moves
    swapped, _ = head_input(model, b, pb, None, a, pa, None)
    torch.testing.assert_close(swapped, torch.cat([v, u, u * v, v - u], dim=-1))


def test_concat_interaction_and_bad_values():
    model, (a, pa), (b, pb) = model_and_inputs(interaction="concat")
    feats, _ = head_input(model, a, pa, None, b, pb, None)
    with torch.no_grad():
        torch.testing.assert_close(feats, torch.cat([model.encoder(a, pa)[:, 0], model.encoder(b, pb)[:, 0]], -1))
    with pytest.raises(ValueError, match=r"model.interaction must be one of \['nli', 'concat'\]"):
        RetrievalHead(16, 2, interaction="dot")
    with pytest.raises(ValueError, match=r"model.pooling must be 'cls' or 'mean'"):
        RetrievalHead(16, 2, pooling="max")
    with pytest.raises(ValueError, match=r"no 'input_ids_2'"):
        model(a, pa)


def test_towers_share_one_encoder():
    model = RetrievalClassifier(num_classes=2, **ENC)
    single = Encoder(**ENC)
    n_head = sum(p.numel() for p in model.head.parameters())
    assert n_head == (4 * 16 * 16 + 16) + (16 * 2 + 2)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in single.parameters()) + n_head
    # and the one encoder really serves both towers: perturbing it moves both u and v
    model.eval()
    a, b = torch.randint(2, 30, (2, 10)), torch.randint(2, 30, (2, 8))
    with torch.no_grad():
        before = model.encode_pair(a, None, None, b)
        model.encoder.norm.bias.add_(1.0)
        after = model.encode_pair(a, None, None, b)
    torch.testing.assert_close(after[0], before[0] + 1.0)
    torch.testing.assert_close(after[1], before[1] + 1.0)
