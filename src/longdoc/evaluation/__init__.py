"""Reports of ``evaluate.py`` (``mode=...``, dispatched by :data:`longdoc.evaluate.MODES`), one module each:

* :mod:`.metrics` -- ``mode=metrics``: a checkpoint scored on its data's test / validation split.
* :mod:`.report` -- ``mode=lra_table``: test accuracies of training runs as Long Range Arena's Table 1
  (Tay et al. 2021), beside the published rows; byte-level LM runs (bits per byte) in their own table.
* :mod:`.efficiency` -- ``mode=efficiency``: LRA's Table 2 (training steps per second and peak memory vs
  sequence length, relative to the Transformer), every configuration measured in a fresh process.
* :mod:`.patterns` -- ``mode=attention_pattern``: which keys each query attends (and with what
  probability), from the attention modules' own introspection methods.

Shared by them:

* :mod:`.checkpoint` -- loading a module (and its data) from a checkpoint written by ``train.py``;
* :mod:`.train_config` -- the training configuration and models built from it;
* :mod:`.measure` / :mod:`.runner` / :mod:`.output` -- the efficiency harness (shared with ``benchmarks/``):
  measuring inside a worker process, running worker processes, tables / plots / files.

Nothing is imported here, so that the efficiency worker processes (``python -m
longdoc.evaluation.efficiency --worker ...``) start without loading matplotlib, rich or Hydra.
"""
