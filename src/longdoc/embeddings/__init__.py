"""Token and positional embeddings."""

from .axial import AxialPositionalEmbedding
from .positions import LearnedPositionalEmbedding, SinusoidalPositionalEmbedding, build_position, padded_position_ids

__all__ = ["AxialPositionalEmbedding", "LearnedPositionalEmbedding", "SinusoidalPositionalEmbedding", "build_position",
           "padded_position_ids"]
