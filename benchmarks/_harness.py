"""The benchmark scripts' shared machinery (``attention.py``, ``memory.py``): a re-export of the measurement
modules that also serve ``evaluate.py mode=efficiency``, so that the two measure time and peak memory with one
piece of code (see benchmarks/README.md, "How time and memory are measured"):

* :mod:`longdoc.evaluation.measure` -- worker side: timing, peak memory, ``worker_main``;
* :mod:`longdoc.evaluation.runner` -- parent side: one fresh process per configuration, timeouts, memory limits;
* :mod:`longdoc.evaluation.output` -- CSV / JSON / markdown tables, plots, the machine header.
"""

from longdoc.evaluation import measure as _measure
from longdoc.evaluation import output as _output
from longdoc.evaluation import runner as _runner
from longdoc.evaluation.measure import *  # noqa: F401,F403
from longdoc.evaluation.output import *  # noqa: F401,F403
from longdoc.evaluation.runner import *  # noqa: F401,F403

__all__ = [*_measure.__all__, *_runner.__all__, *_output.__all__]
