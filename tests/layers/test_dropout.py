"""The CPU dropout path (longdoc.layers.dropout): rate, scaling, gradient, replay from the RNG state."""

import pytest
import torch
import torch.nn.functional as F

from longdoc.layers import Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_rate_scale_and_gradient(p):
    torch.manual_seed(0)
    x = torch.randn(64, 50, 33, dtype=torch.float64, requires_grad=True)
    out = dropout(x, p)
    kept = out != 0
    rate = 1 - kept.double().mean().item()
    assert abs(rate - p) < 0.01  # 105600 draws
    scale = 1 / (1 - round(p * 2**15) / 2**15)
    torch.testing.assert_close(out[kept], x[kept] * scale, rtol=1e-15, atol=0)
    g = torch.randn_like(x)
    out.backward(g)
    torch.testing.assert_close(x.grad, g * kept * scale, rtol=1e-15, atol=0)


def test_independent_elements_and_replay():
    torch.manual_seed(1)
    x = torch.ones(4, 1000)
    a = dropout(x, 0.3)
    # neighbouring elements (lanes of one 64-bit word) are not correlated
    d = (a == 0).float()
    both = (d[:, 0::4] * d[:, 1::4]).mean().item()
    assert abs(both - 0.09) < 0.02
    torch.manual_seed(1)
    assert torch.equal(dropout(x, 0.3), a)  # replayable from the global generator's state
    assert not torch.equal(dropout(x, 0.3), a)


def test_module_eval_zero_and_fallbacks():
    x = torch.randn(3, 5)
    m = Dropout(0.2)
    assert isinstance(m, torch.nn.Dropout) and m.p == 0.2
    assert dropout(x, 0.0) is x and dropout(x, 0.5, training=False) is x
    assert m.eval()(x) is x
    assert torch.equal(dropout(x, 1.0), F.dropout(x, 1.0))  # rates the 15-bit path cannot express
    with pytest.raises(ValueError):
        dropout(x, 1.5)
    y = Dropout(0.5, inplace=True).train()(x.clone())  # inplace: torch's own
    assert ((y == 0) | (y.abs() > 0)).all()
