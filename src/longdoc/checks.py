"""Argument checks shared by every layer (no dependencies): each names the config key in its message."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and how to fix it. The entry points print only
    the message (``longdoc.cli``); defined here, in the lowest layer, so every layer can raise it."""


class CheckpointNotFoundError(ConfigError, FileNotFoundError):
    """``ckpt_path`` names no checkpoint (missing file, or a directory without one); the message says what to pass."""


def check_positive_int(name: str, value: Any, *, hint: str = "") -> int:
    """Return ``value`` as an int.

    Raises:
        ValueError: ``value`` is not a positive integer (a bool is not); the message names ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}" + (f"; {hint}" if hint else ""))
    return value
