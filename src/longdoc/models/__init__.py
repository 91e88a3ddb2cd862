"""Models: encoder, heads, task models, and :func:`build_task_model` that picks one by task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from .classifier import SequenceClassifier
from .compiling import compile_model
from .encoder import Encoder
from .heads import RetrievalHead, SequenceClassificationHead, pool
from .lm import CausalLM, next_token_loss, next_token_targets
from .mlm import SPAN_SAMPLINGS, MaskedLM, check_masking, mask_tokens, masked_lm_loss, span_mask
from .multilabel import MultiLabelHead, check_threshold, multilabel_loss, multilabel_predict
from .qa import QuestionAnsweringHead, SpanPrediction, answer_text, best_span, mask_logits, qa_loss, span_char_offsets
from .retrieval import RetrievalClassifier
from .token_classification import TokenClassificationHead, token_classification_loss
from .window_tasks import MultiLabelClassifier, QuestionAnsweringModel, TokenClassifier

#: The tasks a model can be trained on: a data module's own (``LongDocDataModule.task``: classification, retrieval,
#: lm, multilabel, token_classification, qa) and the self-pretraining objectives that read any data module's batches
#: (lm, mlm; the root config key ``task``).
TASKS: tuple[str, ...] = ("classification", "retrieval", "lm", "mlm", "multilabel", "token_classification", "qa")
#: The tasks a data module can declare.
DATA_TASKS: tuple[str, ...] = ("classification", "retrieval", "lm", "multilabel", "token_classification", "qa")
#: Tasks whose targets are derived from ``input_ids`` alone, so they run on the batches of any data module.
PRETRAINING_TASKS: tuple[str, ...] = ("lm", "mlm")

# model.* keys that belong to some tasks only; the others are dropped for the rest (conf/model/encoder.yaml
# carries them all so one model config serves every task).
_TASK_ONLY_KEYS: dict[str, tuple[str, ...]] = {
    "pooling": ("classification", "retrieval", "multilabel"),
    "head_dropout": ("classification", "retrieval", "multilabel", "token_classification"),
    "interaction": ("retrieval",),
    "tie_word_embeddings": ("lm", "mlm"),
    "threshold": ("multilabel",),
}


#: model.* keys that say how to initialise a model (applied by ``longdoc.train.build_module``, never by the model's
#: constructor, so rebuilding a model from a checkpoint's hyperparameters does not read the pretrained file again),
#: and ``compile`` (:func:`compile_model`, applied there too: a checkpoint rebuilt for evaluation runs eagerly).
BUILD_ONLY_KEYS: tuple[str, ...] = ("init_from", "init_extend_positions", "freeze_embeddings", "pretrained",
                                    "compile")


def check_task(task: str) -> str:
    """Return ``task`` if it is one of :data:`TASKS`.

    Raises:
        ValueError: any other value, naming the valid ones.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r} is unknown: choose one of {list(DATA_TASKS)} (a data module's task) or a "
                         f"self-pretraining objective on any data, one of {list(PRETRAINING_TASKS)}")
    return task


def build_task_model(task: str, *, num_classes: int, vocab_size: int, max_seq_len: int, pad_id: int = 0,
                     **model: Any) -> nn.Module:
    """The model of a task: :class:`SequenceClassifier` (classification), :class:`RetrievalClassifier`
    (retrieval), :class:`CausalLM` (lm, ``vocab_size`` outputs; ``pad_id`` unused, see :class:`CausalLM`),
    :class:`MaskedLM` (mlm, ``vocab_size + 1`` ids: the mask token is ``vocab_size``; ``pad_id`` is its embedding's
    zero row, None for byte data whose id 0 is a real byte), :class:`MultiLabelClassifier` (multilabel,
    ``num_classes`` labels), :class:`TokenClassifier` (token_classification, ``num_classes`` tags) or
    :class:`QuestionAnsweringModel` (qa: start / end logits per token).

    Args:
        task: one of :data:`TASKS`.
        num_classes, vocab_size, max_seq_len, pad_id: from the data module (``num_classes`` unused by lm / mlm /
            qa; the number of labels of multilabel, of tags of token_classification).
        **model: the ``model`` config (conf/model/encoder.yaml); keys of other tasks (``pooling``,
            ``head_dropout``, ``interaction``, ``tie_word_embeddings``, ``threshold``) are ignored.

    Raises:
        ValueError: unknown task; invalid model settings (key named).
    """
    check_task(task)
    kwargs: Mapping[str, Any] = {k: v for k, v in model.items()
                                 if task in _TASK_ONLY_KEYS.get(k, TASKS) and k not in BUILD_ONLY_KEYS}
    if task == "classification":
        return SequenceClassifier(num_classes=num_classes, vocab_size=vocab_size, max_seq_len=max_seq_len,
                                  pad_id=pad_id, **kwargs)
    if task == "retrieval":
        return RetrievalClassifier(num_classes=num_classes, vocab_size=vocab_size, max_seq_len=max_seq_len,
                                   pad_id=pad_id, **kwargs)
    if task == "multilabel":
        return MultiLabelClassifier(num_labels=num_classes, vocab_size=vocab_size, max_seq_len=max_seq_len,
                                    pad_id=pad_id, **kwargs)
    if task == "token_classification":
        return TokenClassifier(num_labels=num_classes, vocab_size=vocab_size, max_seq_len=max_seq_len, pad_id=pad_id,
                               **kwargs)
    if task == "qa":
        return QuestionAnsweringModel(vocab_size=vocab_size, max_seq_len=max_seq_len, pad_id=pad_id, **kwargs)
    if task == "mlm":
        return MaskedLM(vocab_size=vocab_size, max_seq_len=max_seq_len, pad_id=pad_id, **kwargs)
    return CausalLM(vocab_size=vocab_size, max_seq_len=max_seq_len, **kwargs)


__all__ = [
    "TASKS", "DATA_TASKS", "PRETRAINING_TASKS", "build_task_model", "check_task",
    "Encoder", "compile_model", "SequenceClassificationHead", "RetrievalHead", "pool",
    "SequenceClassifier", "RetrievalClassifier", "CausalLM", "next_token_loss", "next_token_targets",
    "MaskedLM", "SPAN_SAMPLINGS", "check_masking", "mask_tokens", "masked_lm_loss", "span_mask",
    "MultiLabelHead", "check_threshold", "multilabel_loss", "multilabel_predict",
    "TokenClassificationHead", "token_classification_loss",
    "MultiLabelClassifier", "TokenClassifier", "QuestionAnsweringModel",
    "QuestionAnsweringHead", "SpanPrediction", "answer_text", "best_span", "mask_logits", "qa_loss", "span_char_offsets",
]
