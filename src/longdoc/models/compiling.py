"""``model.compile=true``: the encoder's blocks compiled with ``torch.compile``.

Each block is compiled on its own (``nn.Module.compile``, in place: parameter names, ``state_dict`` and checkpoints
are unchanged): its layer norms, projections, residual sums, feed-forward and dropout become one graph per block,
traced once and reused by every block of the same structure. The attention kernels run eagerly between the compiled
parts (``torch.compiler.disable`` on the attention modules' ``_attend``: Longformer's and Reformer's custom autograd
functions, their data-dependent index plans and the hashing RNG draw); exact attention (``full``) traces
``scaled_dot_product_attention`` into the graph. In a reversible stack the two branches of every block are compiled
and the coupling -- with its RNG replay -- stays eager (:meth:`longdoc.layers.ReversibleSequence.compile`).

The first steps trace and compile (seconds to minutes, on CPU a C++ compiler is needed); a new sequence length
recompiles once, after which torch marks the length dynamic. Measured speed-ups are in benchmarks/README.md.
"""

from __future__ import annotations

from torch import nn

from .encoder import Encoder


def compile_model(model: nn.Module, **options) -> nn.Module:
    """Compile the blocks of every :class:`Encoder` inside ``model`` in place and return ``model``.

    Args:
        model: a longdoc model (e.g. :class:`longdoc.models.SequenceClassifier`) or an ``Encoder``.
        **options: passed to ``torch.compile`` (``mode``, ``dynamic``, ``backend``, ...).

    Raises:
        ValueError: ``model`` contains no ``Encoder``.
    """
    encoders = [m for m in model.modules() if isinstance(m, Encoder)]
    if not encoders:
        raise ValueError(f"model.compile: {type(model).__name__} contains no longdoc Encoder to compile")
    for enc in encoders:
        if enc.reversible_stack is not None:
            enc.reversible_stack.compile(**options)
        else:
            for block in enc.blocks:
                block.compile(**options)
    return model
