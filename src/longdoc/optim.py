"""Optimizer step fused into the backward pass: each parameter is updated, and its gradient freed, as soon as
its gradient is complete.

With reversible layers the activations no longer grow with depth, so what still grows is the persistent
per-layer state (parameters, AdamW's two moments) and the gradients, which ordinary training keeps for every
parameter until ``optimizer.step()``. Stepping each parameter from a post-accumulate-grad hook
(``torch.Tensor.register_post_accumulate_grad_hook``; the technique of PyTorch's "optimizer step in backward"
tutorial, LOMO (Lv et al. 2023, "Full parameter fine-tuning for large language models with limited
resources") and torchtune's ``optimizer_in_bwd``) keeps at most a few gradients alive at a time instead of
all of them.

The updates are exactly those of the wrapped optimizer: each parameter gets a one-parameter instance of the
same optimizer class whose ``state`` *is* the wrapped optimizer's state dict and whose hyperparameters (lr,
betas, weight decay, eps) are read from the parameter's group at every step. So an LR scheduler driving the
wrapped optimizer, its ``state_dict()`` (checkpoints), and ``load_state_dict`` (resume) all work unchanged,
and a checkpoint written with the fused step resumes without it and vice versa.

What it cannot do, because no complete set of gradients ever exists: clip by the global gradient norm,
accumulate gradients over several batches, unscale fp16 gradients (GradScaler), or wait for DDP's all-reduce
(each rank would step on its own local gradient). ``longdoc.train.validate_config`` rejects those
combinations at composition time.
"""

from __future__ import annotations

import torch

#: Per-group keys that select an implementation rather than the update rule; the one-parameter
#: optimizers use the single-tensor implementation.
_IMPLEMENTATION_KEYS = ("params", "foreach", "fused", "capturable", "differentiable")


class OptimizerInBackward:
    """Registers a hook on every parameter of ``optimizer`` that steps that parameter, then sets its ``.grad``
    to None, the moment autograd has accumulated its gradient.

    Args:
        optimizer: a ``torch.optim.Optimizer`` built as usual (param groups, hyperparameters). It keeps the
            state and the param groups; its own ``step()`` then finds no gradients and does nothing, so a
            training loop may still call it (Lightning counts steps by it).

    Attributes:
        optimizer: the wrapped optimizer.
        n_steps: parameter updates made so far (one per parameter per backward pass).

    Raises:
        ValueError: a parameter appears in two groups, or the optimizer has no parameters.

    Shapes, dtypes and devices are those of the parameters; state tensors are created by the optimizer class
    itself, exactly as its ``step()`` would.
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.n_steps = 0
        self._handles: list = []
        self._single: dict[torch.Tensor, tuple[torch.optim.Optimizer, dict]] = {}
        seen: set[int] = set()
        for group in optimizer.param_groups:
            hyper = {k: v for k, v in group.items() if k not in _IMPLEMENTATION_KEYS}
            for p in group["params"]:
                if id(p) in seen:
                    raise ValueError("a parameter appears in two optimizer param groups; give each parameter once")
                seen.add(id(p))
                single = type(optimizer)([{"params": [p], **hyper}], foreach=False)
                self._single[p] = (single, group)
                self._handles.append(p.register_post_accumulate_grad_hook(self._step_one))
        if not self._single:
            raise ValueError("the optimizer has no parameters to step in the backward pass")

    def _step_one(self, p: torch.Tensor) -> None:
        single, group = self._single[p]
        sg = single.param_groups[0]
        for k, v in group.items():  # the scheduler may have changed lr (or anything) since the last step
            if k not in _IMPLEMENTATION_KEYS:
                sg[k] = v
        single.state = self.optimizer.state  # shared: survives load_state_dict, which replaces the dict
        single.step()
        p.grad = None
        self.n_steps += 1

    def remove(self) -> None:
        """Remove the hooks: the parameters go back to ordinary ``optimizer.step()`` updates."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
