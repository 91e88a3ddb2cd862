"""Dropout with a faster CPU path (Srivastava et al. 2014, "Dropout: A Simple Way to Prevent Neural Networks from
Overfitting").

On CPU, ``torch.nn.functional.dropout`` draws one Bernoulli sample per element (``bernoulli_``) and keeps a
float mask for backward. :func:`dropout` draws 15 random bits per element instead -- four elements from each 64-bit
word of torch's global CPU generator (``random_``) -- and turns them into the scaled keep mask by integer
arithmetic (benchmarks/README.md has the measured time). An element is dropped iff its 15-bit integer is below
``round(p * 2**15)``, so the rate is ``p`` rounded to a multiple of ``2**-15``; kept elements are scaled by
``1 / (1 - rate)``. The bits come from the global generator, so the masks
replay exactly from a saved RNG state (reversible layers, :class:`longdoc.layers.reversible.RNGState`). Under
``torch.compile`` it runs eagerly between the compiled graphs (a graph break; the masks are those of eager mode,
and inductor's own CPU dropout is slower still). On other devices (CUDA: one fused kernel) :func:`dropout` is
``torch.nn.functional.dropout``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_BITS = 15
_LEVELS = 1 << _BITS


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Dropout of ``x`` (any shape, floating point) with rate ``p`` in [0, 1] when ``training``; ``x`` itself
    otherwise or for ``p == 0``. CPU tensors use the 15-bit path of the module docstring (rate ``p`` rounded to a
    multiple of 2**-15), everything else ``torch.nn.functional.dropout``.

    Raises:
        ValueError: ``p`` outside [0, 1] (from ``torch.nn.functional.dropout`` for the other paths).
    """
    if not training or p == 0 or x.numel() == 0:
        return x
    threshold = round(p * _LEVELS)
    if x.device.type != "cpu" or not x.is_floating_point() or not 0 < threshold < _LEVELS:
        return F.dropout(x, p, True)
    return _cpu_dropout(x, threshold)


@torch.compiler.disable
def _cpu_dropout(x: torch.Tensor, threshold: int) -> torch.Tensor:
    # eager under torch.compile too: the same masks as eager, and inductor's code for the int16 bit view is slow
    return _CPUDropout.apply(x, threshold)


class _CPUDropout(torch.autograd.Function):
    """out = x * keep / (1 - rate), keep = a 15-bit uniform integer >= ``threshold``; saves the scaled keep mask."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, threshold: int):
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_()  # [0, 2**63): 4 x 15 usable bits per word
        bits = bits.view(torch.int16)[:n].view(x.shape).bitwise_and_(_LEVELS - 1)
        # keep = 1 iff bits >= threshold, by integer arithmetic (bool masks are several times slower here)
        keep = bits.sub_(threshold - 1).clamp_(0, 1).to(x.dtype).mul_(_LEVELS / (_LEVELS - threshold))
        ctx.save_for_backward(keep)
        return x * keep

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return grad * keep, None


class Dropout(nn.Dropout):
    """``torch.nn.Dropout`` computed by :func:`dropout` (the faster CPU path); same arguments and attributes.

    ``forward(x (...)) -> (...)``, ``x`` itself in eval mode.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)
