"""Lightning glue: the training module, callbacks, loggers and the preemption machinery."""

from .callbacks import (DDPConsistencyCheck, FinalValidation, LastCheckpoint, PeriodicLastCheckpoint, ThroughputMonitor,
                        peak_host_memory_gib)
from .loggers import MLFLOW_INSTALL_HINT, ResumableCSVLogger, ResumableMLFlowLogger
from .module import BitsPerByte, LongDocModule, warmup_constant, warmup_cosine, warmup_rsqrt
from .task_metrics import (MostFrequentTagBaseline, MultilabelF1FromLogits, SeqevalScores, SquadScores,
                           multilabel_f1_metrics, seqeval_scores, squad_scores)
from .preemption import (AtomicCheckpointIO, PreemptionCheckpoint, ReproducibleRNG, exit_after_signal, rng_states,
                         seed_batch, set_rng_states, submitit_signal)

__all__ = ["MostFrequentTagBaseline", "MultilabelF1FromLogits", "SeqevalScores", "SquadScores",
           "multilabel_f1_metrics", "seqeval_scores", "squad_scores", "AtomicCheckpointIO", "BitsPerByte", "DDPConsistencyCheck", "FinalValidation", "LastCheckpoint", "LongDocModule", "PeriodicLastCheckpoint",
           "PreemptionCheckpoint", "ReproducibleRNG", "ResumableCSVLogger",
           "ResumableMLFlowLogger", "MLFLOW_INSTALL_HINT", "ThroughputMonitor", "exit_after_signal",
           "peak_host_memory_gib", "rng_states", "seed_batch", "set_rng_states", "submitit_signal", "warmup_cosine",
           "warmup_constant", "warmup_rsqrt"]
