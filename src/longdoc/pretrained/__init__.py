"""HuggingFace Longformer / BERT / RoBERTa checkpoints in longdoc: import, make long, export.

* :func:`load_longformer`: a ``LongformerModel`` / ``LongformerForMaskedLM`` directory -> a local_global
  :class:`~longdoc.models.Encoder` (separate global projections, per-layer windows; HF's two-sided
  ``attention_window`` is halved into longdoc's one-sided one).
* :func:`make_long`: a BERT / RoBERTa directory -> a long encoder by allenai's ``convert_model_to_long`` recipe.
* :func:`save_longformer`: the reverse, a directory ``transformers.LongformerModel.from_pretrained`` loads.
* :mod:`longdoc.pretrained.build`: the config entry point, ``model=pretrained model.pretrained.path=<dir>``.

Plain torch + safetensors: transformers is not needed (it is the reference of the tests). Loading runs no code from
the checkpoint: safetensors first, ``torch.load(weights_only=True)`` for ``.bin`` files (a pickle that needs
anything else is refused). Layer: below the entry points / glue (``longdoc.train`` builds a model from it), above
``longdoc.models`` (it builds encoders).
"""

from .build import (ARCHITECTURE_KEYS, PRETRAINED_KEYS, check_pretrained, init_from_pretrained,
                    pretrained_model_config, pretrained_spec)
from .checkpoint import MODEL_TYPES, WEIGHT_FILES, CheckpointError, CheckpointInfo, inspect_checkpoint, load_state_dict
from .convert import (DEFAULT_MAKE_LONG_WINDOW, PretrainedReport, TensorLink, encoder_config, extend_positions,
                      hf_attention_windows, load_longformer, load_pretrained_weights, longformer_config, make_long,
                      save_longformer, tensor_links)

#: The checkpoint kinds (``model.pretrained.kind``).
KINDS: tuple[str, ...] = tuple(MODEL_TYPES)

__all__ = [
    "KINDS", "MODEL_TYPES", "WEIGHT_FILES", "PRETRAINED_KEYS", "ARCHITECTURE_KEYS", "DEFAULT_MAKE_LONG_WINDOW",
    "CheckpointError", "CheckpointInfo", "PretrainedReport", "TensorLink",
    "inspect_checkpoint", "load_state_dict", "encoder_config", "hf_attention_windows", "tensor_links",
    "extend_positions", "load_pretrained_weights", "load_longformer", "make_long", "longformer_config",
    "save_longformer", "pretrained_spec", "check_pretrained", "pretrained_model_config", "init_from_pretrained",
]
