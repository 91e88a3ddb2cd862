"""Reports of ``evaluate.py`` (``mode=...``), one module each:

* :mod:`.report` -- ``mode=lra_table``: test accuracies of training runs as Long Range Arena's Table 1
  (Tay et al. 2021), beside the published rows; byte-level LM runs (bits per byte) in their own table.
* :mod:`.efficiency` -- ``mode=efficiency``: LRA's Table 2 (training steps per second and peak memory vs
  sequence length, relative to the Transformer), every configuration measured in a fresh process.
* :mod:`.patterns` -- ``mode=attention_pattern``: which keys each query attends (and with what
  probability), read from the attention kernels' own computation.
* :mod:`.harness` -- per-process timing / peak-memory machinery (shared with ``benchmarks/``).

Nothing is imported here, so that the efficiency worker processes (``python -m
longdoc.evaluation.efficiency --worker ...``) start without loading matplotlib, rich or Hydra.
"""
