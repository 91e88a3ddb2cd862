"""Lightning glue: the training module and callbacks."""

from .callbacks import DDPConsistencyCheck, PeriodicLastCheckpoint, PreemptionCheckpoint, ThroughputMonitor, peak_host_memory_gib
from .loggers import ResumableCSVLogger
from .module import BitsPerByte, LongDocModule, warmup_cosine, warmup_rsqrt

__all__ = ["DDPConsistencyCheck", "LongDocModule", "PeriodicLastCheckpoint", "PreemptionCheckpoint", "ResumableCSVLogger", "ThroughputMonitor", "peak_host_memory_gib",
           "warmup_cosine", "warmup_rsqrt", "BitsPerByte"]
