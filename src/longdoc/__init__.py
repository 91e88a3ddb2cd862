"""longdoc: transformer encoders for long documents and long sequences.

Attention kernels (full / LSH / local+global), axial positional encodings, reversible
layers and chunked feed-forward, wrapped in a PyTorch Lightning + Hydra training loop.
"""

__version__ = "0.1.0"

from .resolvers import register_resolvers as _register_resolvers

_register_resolvers()
