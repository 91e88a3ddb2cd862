"""model.compile=true: a compiled model's training step computes what the eager one does, for every attention,
plain and reversible (CPU, tiny model; the compile itself takes most of the time, hence ``slow``)."""

import pytest
import torch
import torch.nn.functional as F

from longdoc.config import ConfigError, check_config
from longdoc.models import SequenceClassifier, compile_model
from longdoc.train import validate_config

ATTENTION = {
    "full": {"name": "full"},
    "lsh": {"name": "lsh", "bucket_size": 8, "n_hashes": 2, "seed": 3},
    "local_global": {"name": "local_global", "attention_window": 4},
}


def _model(name, reversible, dropout=0.0):
    torch.manual_seed(0)
    return SequenceClassifier(num_classes=3, vocab_size=20, d_model=32, n_heads=2, depth=2, d_ff=64,
                              attention=ATTENTION[name], position={"name": "axial"}, max_seq_len=64,
                              dropout=dropout, reversible=reversible)


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 20, (2, 37), generator=g)
    pm = torch.ones(2, 37, dtype=torch.bool)
    pm[1, 30:] = False
    gm = torch.zeros_like(pm)
    gm[:, 0] = True
    return ids, pm, gm, torch.tensor([0, 2])


def _step(model, opt, batch, seed=5):
    ids, pm, gm, y = batch
    torch.manual_seed(seed)
    loss = F.cross_entropy(model(ids, pm, gm), y)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item(), grads


@pytest.mark.slow
@pytest.mark.parametrize("reversible", [False, True], ids=["plain", "reversible"])
@pytest.mark.parametrize("name", list(ATTENTION))
def test_compiled_steps_match_eager(name, reversible):
    eager, compiled = _model(name, reversible), _model(name, reversible)
    compile_model(compiled)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # compiled in place: checkpoints unchanged
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (eager, compiled)]
    batch = _batch()
    for step in range(2):  # the second step runs on updated weights (no stale specialisation)
        (loss_e, grads_e), (loss_c, grads_c) = (_step(m, o, batch, seed=step) for m, o in zip((eager, compiled), opts))
        assert loss_c == pytest.approx(loss_e, rel=1e-5, abs=1e-6)
        for k in grads_e:
            torch.testing.assert_close(grads_c[k], grads_e[k], atol=2e-5, rtol=1e-4, msg=k)


@pytest.mark.slow
def test_compiled_reversible_replays_dropout():
    """Dropout inside the compiled branches is replayed in the reversible backward: the same gradients as the same
    coupling under ordinary autograd (which stores every activation)."""
    model = _model("local_global", True, dropout=0.2)
    compile_model(model)
    stack = model.encoder.reversible_stack
    batch = _batch()
    results = []
    for reversible_backward in (True, False):
        stack.reversible_backward = reversible_backward
        results.append(_step(model, torch.optim.SGD(model.parameters(), lr=0.0), batch))
    (loss_r, grads_r), (loss_a, grads_a) = results
    assert loss_r == loss_a
    for k in grads_a:
        torch.testing.assert_close(grads_r[k], grads_a[k], atol=1e-5, rtol=1e-4, msg=k)


def test_model_compile_config(compose_cfg):
    with pytest.raises(ConfigError, match="model.compile"):
        check_config(compose_cfg("model.compile=sometimes"))
    _, module = validate_config(compose_cfg("model.compile=true"))
    blocks = module.net.encoder.blocks
    assert all(b._compiled_call_impl is not None for b in blocks)  # nn.Module.compile, in place
    _, module = validate_config(compose_cfg())
    assert all(b._compiled_call_impl is None for b in module.net.encoder.blocks)
    with pytest.raises(ValueError, match="no longdoc Encoder"):
        compile_model(torch.nn.Linear(2, 2))
