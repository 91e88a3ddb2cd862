"""The benchmark scripts' shared machinery (``attention.py``, ``memory.py``): a re-export of
:mod:`longdoc.evaluation.harness`, which also serves ``evaluate.py mode=efficiency``, so that the two measure
time and peak memory with one piece of code (fresh processes, RSS high-water mark reset, CUDA
``max_memory_allocated``; see benchmarks/README.md, "How time and memory are measured")."""

from longdoc.evaluation.harness import *  # noqa: F401,F403
from longdoc.evaluation.harness import __all__  # noqa: F401
