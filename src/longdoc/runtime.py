"""Process-level settings for long-sequence training on CPU.

glibc's ``malloc`` serves every block above its mmap threshold (128 KiB, adjusted upwards as blocks are
freed, at most 32 MiB) with a fresh ``mmap`` and returns it to the kernel on ``free``; touching it again costs
one page fault per 4 KiB page. A training step at long N allocates and frees hundreds of MiB of such blocks
(activations, score tiles, gradients), so every step pays the faults again, and the step time grows faster
than N (figures: ``benchmarks/README.md``). PyTorch's CPU performance guide recommends jemalloc or tcmalloc (via
``LD_PRELOAD``) for the same reason; :func:`tune_cpu_allocator` gets glibc to reuse its heap instead, with no
extra dependency. Reference: mallopt(3), ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("longdoc")

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
_DEFAULT_BYTES = 1 << 30
_INT_MAX = 2**31 - 1


def tune_cpu_allocator(mmap_threshold: int = _DEFAULT_BYTES, trim_threshold: int = _DEFAULT_BYTES) -> bool:
    """Keep freed blocks in glibc's heap for reuse instead of unmapping them (see the module docstring).

    Args:
        mmap_threshold: bytes; blocks of at least this size still get their own ``mmap`` (glibc caps the value
            at its ``HEAP_MAX`` / 2 and refuses larger ones).
        trim_threshold: bytes of free memory at the top of the heap kept before it is returned to the kernel.

    Returns:
        True when glibc accepted both settings; False where the C library is not glibc (macOS, musl) or
        refused them -- nothing is changed then and training works as before, only slower at long N.
        The process keeps up to ``trim_threshold`` bytes of freed memory resident, and blocks reused from the
        heap fragment it, so the peak RSS grows; hence it is opt-in (``runtime.cpu_allocator=tuned``): for speed
        where memory is not the limit.

    Raises:
        ValueError: a threshold that is not a positive int below 2**31 (mallopt takes a C int).
    """
    for name, v in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= _INT_MAX:
            raise ValueError(f"{name} must be a positive number of bytes below 2**31 (mallopt takes an int), got {v!r}")
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.info("cpu allocator: not glibc (no mallopt); left as it is")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
    if ok:
        log.info("cpu allocator: glibc mmap threshold %d MiB, trim threshold %d MiB (freed blocks are reused, "
                 "not unmapped: faster, larger peak RSS; runtime.cpu_allocator=default keeps glibc's settings)",
                 mmap_threshold >> 20, trim_threshold >> 20)
    else:
        log.warning("cpu allocator: glibc refused mallopt(mmap_threshold=%d, trim_threshold=%d); left as it is",
                    mmap_threshold, trim_threshold)
    return ok
