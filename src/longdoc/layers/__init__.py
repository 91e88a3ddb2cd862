"""Transformer layers: pre- / post-norm block, feed-forward, dropout, reversible stack."""

from .block import NORM_POSITIONS, Block, check_norm_position
from .dropout import Dropout, dropout
from .feedforward import FeedForward
from .reversible import ReversibleBlock, ReversibleSequence

__all__ = ["NORM_POSITIONS", "check_norm_position", "Block", "Dropout", "dropout", "FeedForward", "ReversibleBlock",
           "ReversibleSequence"]
