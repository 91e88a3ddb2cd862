"""Reversible residual layers (Gomez et al. 2017, "The Reversible Residual Network"; Reformer section 3).

Each block couples two activation streams:
    Y1 = X1 + F(X2)        F = attention branch
    Y2 = X2 + G(Y1)        G = feed-forward branch
and is inverted in the backward pass:
    X2 = Y2 - G(Y1),  X1 = Y1 - F(X2).
Only the last block's outputs are kept; every block's activations are recomputed while the
gradient flows back, so activation memory does not grow with depth.

Dropout is replayed exactly by recording the CPU and CUDA RNG states before F and G in the forward
pass and restoring them (inside ``torch.random.fork_rng``, so the global generators are left as they
were) in the recomputation; nothing is ever reseeded. LSH buckets drawn in the forward pass are reused
in the recomputation (a hashing module's ``bucket_mode``: ``"record"`` in the forward pass, ``"replay"`` in the
recomputation).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.checkpoint import get_device_states, set_device_states


class RNGState:
    """A snapshot of the CPU generator and of the generators of the accelerator devices that ``tensors`` live on
    (``torch.utils.checkpoint.get_device_states``, as activation checkpointing takes it); ``replay()`` is a
    context manager that runs its body from that snapshot and then restores the previous states."""

    def __init__(self, *tensors: torch.Tensor):
        self.cpu = torch.get_rng_state()
        self.devices, self.device_states = get_device_states(*[t for t in tensors if t is not None])

    @contextmanager
    def replay(self):
        with torch.random.fork_rng(devices=self.devices, enabled=True):
            torch.set_rng_state(self.cpu)
            set_device_states(self.devices, self.device_states)
            yield


def _set_bucket_mode(module: nn.Module, mode: str | None) -> None:
    for m in module.modules():
        if hasattr(m, "bucket_mode"):
            m.bucket_mode = mode


class ReversibleBlock:
    """Views a :class:`longdoc.layers.Block` as a RevNet coupling of its two branches (it does not own
    the block: parameters stay registered where the block lives).

    ``block_rev(x1, x2, padding_mask, global_attention_mask) -> (y1, y2)``, all (B, N, D).
    """

    def __init__(self, block: nn.Module):
        self.block = block
        self._rng_f: list[RNGState] = []
        self._rng_g: list[RNGState] = []

    def compile(self, **options) -> None:
        """Replace the two branches ``f`` and ``g`` by ``torch.compile`` versions of themselves (``options`` go to
        ``torch.compile``); the coupling and its RNG replay stay eager."""
        self.f = torch.compile(self.f, **options)
        self.g = torch.compile(self.g, **options)

    def f(self, x, padding_mask, global_attention_mask):
        return self.block.attention_branch(x, padding_mask, global_attention_mask)

    def g(self, x):
        return self.block.feed_forward_branch(x)

    def __call__(self, x1, x2, padding_mask=None, global_attention_mask=None, record: bool = False):
        if record:
            self._rng_f.append(RNGState(x2))
            _set_bucket_mode(self.block, "record")
        try:
            y1 = x1 + self.f(x2, padding_mask, global_attention_mask)
        finally:
            _set_bucket_mode(self.block, None)
        if record:
            self._rng_g.append(RNGState(y1))
        y2 = x2 + self.g(y1)
        return y1, y2

    def backward_pass(self, y1, y2, dy1, dy2, padding_mask=None, global_attention_mask=None):
        """Reconstruct (x1, x2) from (y1, y2) and return them with their gradients; accumulates
        parameter gradients into ``.grad``."""
        rng_g, rng_f = self._rng_g.pop(), self._rng_f.pop()
        with torch.enable_grad():
            y1 = y1.detach().requires_grad_(True)
            with rng_g.replay():
                gy1 = self.g(y1)
            torch.autograd.backward(gy1, dy2)
        with torch.no_grad():
            x2 = y2 - gy1
            dx1 = dy1 + y1.grad
            del gy1
        with torch.enable_grad():
            x2 = x2.detach().requires_grad_(True)
            _set_bucket_mode(self.block, "replay")
            try:
                with rng_f.replay():
                    fx2 = self.f(x2, padding_mask, global_attention_mask)
            finally:
                _set_bucket_mode(self.block, None)
            torch.autograd.backward(fx2, dx1)
        with torch.no_grad():
            x1 = y1 - fx2
            dx2 = dy2 + x2.grad
        return x1.detach(), x2.detach(), dx1, dx2


class _ReversibleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x1, x2, blocks, padding_mask, global_attention_mask):
        with torch.no_grad():
            for blk in blocks:
                x1, x2 = blk(x1, x2, padding_mask, global_attention_mask, record=True)
        ctx.blocks = blocks
        ctx.masks = (padding_mask, global_attention_mask)
        ctx.save_for_backward(x1, x2)
        return x1, x2

    @staticmethod
    def backward(ctx, dy1, dy2):
        y1, y2 = ctx.saved_tensors
        for blk in reversed(ctx.blocks):
            y1, y2, dy1, dy2 = blk.backward_pass(y1, y2, dy1, dy2, *ctx.masks)
        return dy1, dy2, None, None, None


class ReversibleSequence:
    """Runs blocks as reversible couplings with O(1) activation memory in depth (Reformer section 3).

    Args:
        blocks: :class:`longdoc.layers.Block` modules (owned by the caller, e.g. an ``nn.ModuleList``).
        reversible_backward: False computes the same coupling with ordinary autograd, storing every
            activation (the reference the tests compare against).

    ``stack(x1 (B, N, D), x2 (B, N, D), padding_mask=None, global_attention_mask=None) -> (y1, y2)``.
    """

    def __init__(self, blocks: Sequence[nn.Module], reversible_backward: bool = True):
        self.blocks = [ReversibleBlock(b) for b in blocks]
        self.reversible_backward = reversible_backward

    def compile(self, **options) -> None:
        """Compile every block's two branches (:meth:`ReversibleBlock.compile`)."""
        for blk in self.blocks:
            blk.compile(**options)

    def __call__(self, x1, x2, padding_mask=None, global_attention_mask=None):
        needs_grad = torch.is_grad_enabled() and (
            x1.requires_grad or x2.requires_grad
            or any(p.requires_grad for b in self.blocks for p in b.block.parameters())
        )
        if not (self.reversible_backward and needs_grad):
            for blk in self.blocks:
                x1, x2 = blk(x1, x2, padding_mask, global_attention_mask)
            return x1, x2
        if not (x1.requires_grad or x2.requires_grad):
            # the Function must produce outputs that require grad so its backward runs for the parameters
            x1 = x1.detach().requires_grad_(True)
        return _ReversibleFunction.apply(x1, x2, self.blocks, padding_mask, global_attention_mask)
