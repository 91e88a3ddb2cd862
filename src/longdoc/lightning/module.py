"""LightningModule for the long-document tasks: classification, two-tower retrieval, byte-level LM, multi-label
classification, token classification, extractive QA, and the self-pretraining objectives (causal LM, masked LM) on
the batches of any data module."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from ..data.base import CLS_ID, IGNORE_INDEX
from ..models import (PRETRAINING_TASKS, build_task_model, check_masking, check_task, mask_tokens, masked_lm_loss,
                      multilabel_loss, next_token_loss, next_token_targets, qa_loss, token_classification_loss)
from ..optim import OptimizerInBackward
from .task_metrics import SquadScores, multilabel_f1_metrics
from .window_metrics import DocumentSeqevalScores, gather_objects, pick_answers, window_candidates

logger = logging.getLogger("longdoc")

#: Keys of the ``optimizer`` config.
OPTIMIZER_KEYS = frozenset({"lr", "weight_decay", "betas", "eps", "in_backward", "encoder_lr_ratio", "fused"})
#: Learning-rate decays after the warm-up (``scheduler.decay``).
DECAYS = ("cosine", "rsqrt", "constant")
#: Keys of the ``mlm`` config (masking, :func:`longdoc.models.mask_tokens`) and their defaults (BERT's).
MLM_DEFAULTS: dict[str, Any] = {"mask_rate": 0.15, "mask_token_ratio": 0.8, "random_token_ratio": 0.1,
                                "span_length": 1.0, "span_sampling": "geometric", "seed": 0}
#: Keys of the ``qa`` config (answer decoding, :func:`longdoc.models.best_span`) and their defaults (HF run_qa.py's):
#: the longest answer in tokens, ``null_score_diff_threshold``, and whether "no answer" may be predicted (SQuAD 2.0;
#: false for SQuAD 1.1, whose questions all have an answer).
QA_DEFAULTS: dict[str, Any] = {"max_answer_tokens": 30, "null_threshold": 0.0, "no_answer": True}
#: The tasks of window batches (``longdoc.data.windows.collate_windows``) whose loss is a weighted mean metric.
WINDOW_TASKS = ("multilabel", "token_classification", "qa")


def fused_adamw_blocks_clipping(precision: str, gradient_clip_val: float | None) -> bool:
    """Whether torch's fused AdamW and gradient clipping exclude each other: under a ``*-mixed`` ``precision``
    Lightning's AMP plugin clips after unscaling, which a fused step does inside itself, so it refuses to clip
    (``gradient_clip_val`` set) for a fused optimizer."""
    return str(precision).endswith("-mixed") and bool(gradient_clip_val)


#: Stream of the validation / test masks (see :meth:`LongDocModule.mask_generator`).
_STAGE_STREAM = {"train": 0, "val": 1, "test": 2}


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear warm-up from 0 over ``warmup_steps``, then cosine decay to ``min_lr_ratio``
    at ``total_steps`` (Loshchilov & Hutter 2017, SGDR eq. (5), one cycle)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_rsqrt(step: int, *, warmup_steps: int) -> float:
    """LR multiplier of Long Range Arena's ``constant * linear_warmup * rsqrt_decay`` schedule (LRA
    ``lra_benchmarks/utils/train_utils.py``, after the Transformer's schedule, Vaswani et al. 2017 section 5.3),
    normalised to 1 at the end of the warm-up: ``min(1, s / W) * sqrt(W / max(s, W))`` with ``s = step + 1``.
    So ``optimizer.lr`` is the peak rate, i.e. LRA's ``learning_rate / sqrt(warmup)``."""
    w = max(1, warmup_steps)
    s = step + 1
    return min(1.0, s / w) * math.sqrt(w / max(s, w))


def warmup_constant(step: int, *, warmup_steps: int) -> float:
    """LR multiplier: linear warm-up from 0 over ``warmup_steps``, then constant 1 (the ``constant_warmup``
    scheduler of Amos, Berant & Gupta 2023's configs; transformers' ``get_constant_schedule_with_warmup``)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    return 1.0


class BitsPerByte(MeanMetric):
    """Token-weighted mean negative log-likelihood converted to bits: ``sum(nll_i) / count / ln 2``.

    ``update(mean_nll_nats, weight=number_of_targets)`` once per batch; states are sums, so the epoch value is
    the mean over all predicted bytes (not a mean of batch means) and is exact under DDP.
    """

    def compute(self) -> torch.Tensor:
        return super().compute() / math.log(2.0)


class LongDocModule(pl.LightningModule):
    """Trains the model of a task with AdamW and warm-up + cosine (or LRA's rsqrt) decay.

    Tasks (``task``, from the data module's ``task`` attribute; see :func:`longdoc.models.build_task_model`):

    * ``classification``: :class:`~longdoc.models.SequenceClassifier`. Batches: ``input_ids`` (B, N) int64,
      ``padding_mask`` (B, N) bool, ``global_attention_mask`` (B, N) bool, ``labels`` (B,) int64.
      Logged: ``{train,val,test}/loss``, ``{train,val,test}/acc``, ``test/majority_acc``.
    * ``retrieval``: :class:`~longdoc.models.RetrievalClassifier` (LRA section 3.3, one encoder for both
      documents). Batches: the classification keys for document 1 plus ``input_ids_2``, ``padding_mask_2``,
      ``global_attention_mask_2`` (B, N2). Logged: as classification.
    * ``lm``: :class:`~longdoc.models.CausalLM`. Batches: ``input_ids`` (B, N), ``padding_mask``,
      ``global_attention_mask`` (all False), ``labels`` (B, N) next token, ``-100`` where none. Loss: mean
      cross-entropy (float32) over the targets. Logged: ``{train,val,test}/loss`` (nats per byte) and
      ``{train,val,test}/bpb`` (bits per byte = loss / ln 2), both averaged over all predicted bytes of the
      epoch, and ``test/unigram_bpb`` (the data's unigram entropy, a baseline).
      On classification / retrieval data (``data_task``; causal self-pretraining, Amos et al. 2023) the labels are
      derived from ``input_ids`` (:func:`~longdoc.models.next_token_targets`: the next real token, never
      ``<pad>`` / ``<cls>``), the batch's class labels are unused, and for retrieval only document 1 is read
      (``input_ids``, ``padding_mask``, ``global_attention_mask``). ``bpb`` is then bits per token.
    * ``mlm``: :class:`~longdoc.models.MaskedLM` on the batches of any data module (document 1 for retrieval;
      labels unused): each batch is masked here (:func:`~longdoc.models.mask_tokens`, the ``mlm`` settings), on
      the batch's device. Training masks draw from the global torch generator, which
      :class:`~longdoc.lightning.ReproducibleRNG` seeds per batch; validation / test masks from a generator seeded
      by ``(mlm.seed, stage, batch index, rank)``, so every validation scores the same masked positions.
      Logged: ``{train,val,test}/mlm_loss`` (nats per masked token), ``{stage}/mlm_acc`` (argmax accuracy on the
      masked tokens) and ``{stage}/bpt`` (bits per masked token = mlm_loss / ln 2), each averaged over all masked
      tokens of the epoch (sum states: exact under DDP).

    * ``multilabel``: :class:`~longdoc.models.MultiLabelClassifier` (``num_classes`` labels). Batches: the
      classification keys with ``labels`` (B, L) float 0 / 1 (a row of ``IGNORE_INDEX``: a DDP repeat). Loss:
      :func:`~longdoc.models.multilabel_loss`. Logged: ``{train,val,test}/loss`` (mean over every (document, label)
      decision of the epoch), ``{val,test}/f1_micro``, ``{val,test}/f1_macro`` (label l predicted when
      ``sigmoid(logit) > model.threshold``, default 0.5; torchmetrics count states, exact under DDP).
    * ``token_classification``: :class:`~longdoc.models.TokenClassifier` (``num_classes`` tags). Batches:
      ``collate_windows`` of tagging windows: ``labels`` (B, N) tag ids with ``IGNORE_INDEX``, ``owned_mask``,
      ``context_mask``, ``token_start``, ``example_index``. Training: the loss over every labelled token; validation /
      test: only the tokens whose ``owned_mask`` is True count (each document token once, in its owner window).
      Logged: ``{stage}/loss`` (mean over the tokens counted), ``{val,test}/f1``, ``precision``, ``recall``
      (seqeval, entity level, each document's windows put back together in document order:
      :class:`~longdoc.lightning.window_metrics.DocumentSeqevalScores`), ``{val,test}/token_acc``. Tag names:
      ``label_names`` (else the data module's ``label_names``, read in :meth:`setup`).
    * ``qa``: :class:`~longdoc.models.QuestionAnsweringModel` (the encoder gets ``global_attention_mask``; logits
      outside ``context_mask`` except CLS masked). Batches: ``collate_windows`` of QA windows: ``start_positions`` /
      ``end_positions`` (B,) (``IGNORE_INDEX``: a DDP repeat), ``context_mask``, ``offsets``, ``example_index`` (or
      ``example_id``), ``window_index``, and per row the example's ``context`` (str) and gold ``answers`` (a list of
      strings or SQuAD's ``{"text": [...]}``) as Python lists. Loss: :func:`~longdoc.models.qa_loss`. At
      validation / test each window gives its best span (:func:`~longdoc.models.best_span`, the ``qa`` settings);
      at the epoch's end the candidates of all ranks are gathered (``all_gather_object``), each example's answer is
      the best of its windows' spans (or "" by the no-answer rule), which equals ``best_span`` over all its windows
      wherever they were batched, and the examples are scored round-robin over the ranks into
      :class:`~longdoc.lightning.task_metrics.SquadScores` (sum states): every example counted once.
      Logged: ``{stage}/loss`` (mean over windows), ``{val,test}/exact_match``, ``{val,test}/f1`` (percent).

    Labels equal to ``IGNORE_INDEX`` (-100: samples a distributed sampler repeats to give every rank the same number
    of batches) count in no loss and no metric, so a DDP validation or test sees every sample exactly once.

    The training loss is logged per step and per epoch (``train/loss_step``, ``train/loss_epoch``); the learning
    rate and tokens/s come from callbacks.

    Args:
        model: the ``model`` config: kwargs of the task's model (d_model, n_heads, depth, d_ff, dropout, pooling,
            chunk_size_feed_forward, attention: {name, ...}, position: {name, ...}, ...).
        num_classes, vocab_size, max_seq_len, pad_id: from the data module.
        optimizer: ``{lr, weight_decay, betas, eps}`` for ``torch.optim.AdamW`` (norms, biases and axial factors
            get no weight decay), ``encoder_lr_ratio`` (the encoder's learning rate is ``lr`` times it, the head's
            ``lr``: a lower rate for a pretrained encoder when fine-tuning; 1.0 = one rate), ``fused`` (None:
            torch's fused AdamW kernel wherever the parameters allow, False: its per-tensor loop; the same update
            rule) and ``in_backward``: True steps each parameter inside the backward pass and frees
            its gradient at once (:class:`~longdoc.optim.OptimizerInBackward`; the same updates, without
            all gradients alive at once; no gradient clipping, accumulation, fp16 or DDP, which ``validate_config``
            checks).
        scheduler: ``{warmup_steps | warmup_ratio, min_lr_ratio, decay}``; ``decay``: 'cosine' (default, to
            ``min_lr_ratio`` at the last step), 'rsqrt' (:func:`warmup_rsqrt`) or 'constant'
            (:func:`warmup_constant`); total steps come from the trainer.
        config: the resolved run configuration, stored in the checkpoint so ``evaluate.py`` can rebuild
            the data module and model from the checkpoint alone.
        task: the training objective: 'classification' (default), 'retrieval', 'lm', 'mlm', 'multilabel',
            'token_classification' or 'qa'; saved in the
            hyperparameters, so ``LongDocModule(**ckpt["hyper_parameters"])`` rebuilds the right model.
        data_task: the data module's own task (default: ``task``); lm / mlm read the batches of any.
        mlm: masking settings for ``task='mlm'`` (:data:`MLM_DEFAULTS`: mask_rate, mask_token_ratio,
            random_token_ratio, span_length, span_sampling, seed).
        special_ids: token ids the MLM / LM objectives never mask, draw as replacements or predict (``pad_id`` is
            always one). Default None: ``<pad>`` and ``<cls>`` (:data:`~longdoc.data.CLS_ID`), none for byte-LM
            data; a pretrained tokenizer's data module gives its own (BERT: ``[PAD] [UNK] [CLS] [SEP] [MASK]``).
        mask_token_id: the id MLM puts in place of masked tokens: default None, the extra id ``vocab_size`` (the
            task model embeds ``vocab_size + 1`` ids); a pretrained tokenizer's ``[MASK]`` / ``<mask>`` id (in
            ``0 .. vocab_size - 1``) keeps the checkpoint's own mask embedding.
        label_names: token_classification: tag id -> BIO tag name (default None: the data module's ``label_names``,
            read in :meth:`setup` and then saved in the hyperparameters).
        qa: answer decoding for ``task='qa'`` (:data:`QA_DEFAULTS`: max_answer_tokens, null_threshold, no_answer).

    Raises:
        ValueError: unknown ``task``, ``scheduler.decay``, ``optimizer``, ``mlm`` or ``qa`` key; ``mask_token_id`` outside
            ``0 .. vocab_size``; a classification /
            retrieval ``task`` on another task's data; invalid masking (:func:`~longdoc.models.check_masking`) or
            model settings (key named); ``optimizer.in_backward`` under a trainer of several processes (from
            ``configure_optimizers``).
    """

    def __init__(self, model: Mapping, num_classes: int, vocab_size: int, max_seq_len: int, pad_id: int = 0,
                 optimizer: Mapping | None = None, scheduler: Mapping | None = None,
                 config: Mapping | None = None, task: str = "classification", data_task: str | None = None,
                 mlm: Mapping | None = None, special_ids: Sequence[int] | None = None,
                 mask_token_id: int | None = None, label_names: Sequence[str] | None = None,
                 qa: Mapping | None = None):
        super().__init__()
        self.task = check_task(task)
        self.data_task = check_task(data_task or task)
        if self.data_task == "mlm":
            raise ValueError("data_task='mlm' is not a data module's task: data modules declare classification, "
                             "retrieval, lm, multilabel, token_classification or qa")
        if self.task != self.data_task and self.task not in PRETRAINING_TASKS:
            raise ValueError(f"task={self.task} needs {self.task} data, but the data module's task is "
                             f"{self.data_task}; on this data use task=null ({self.data_task}), lm or mlm")
        self.save_hyperparameters(logger=False)  # train.py logs the resolved run config itself
        self.mlm_cfg = {**MLM_DEFAULTS, **dict(mlm or {})}
        unknown = set(self.mlm_cfg) - set(MLM_DEFAULTS)
        if unknown:
            raise ValueError(f"mlm has unknown keys {sorted(unknown)}: the keys are {sorted(MLM_DEFAULTS)}")
        # byte LM data: every id is a real byte (padding told apart by padding_mask); others: <pad>, <cls>
        byte_data = self.data_task == "lm"
        if special_ids is None:
            self.special_ids: tuple[int, ...] = () if byte_data else tuple(sorted({int(pad_id), CLS_ID}))
        else:
            self.special_ids = tuple(sorted({int(i) for i in special_ids} | {int(pad_id)}))
        self.vocab_size = int(vocab_size)
        if mask_token_id is not None and not 0 <= int(mask_token_id) <= self.vocab_size:
            raise ValueError(f"mask_token_id={mask_token_id} is outside 0 .. vocab_size={self.vocab_size}: give the "
                             "tokenizer's mask token id, or None for the extra id vocab_size")
        self.mask_token_id = self.vocab_size if mask_token_id is None else int(mask_token_id)
        if self.task == "mlm" and special_ids is not None:
            logger.info("mlm: mask token id %d, never masked or predicted: ids %s", self.mask_token_id,
                        list(self.special_ids))
        if self.task == "mlm":
            check_masking(**{k: v for k, v in self.mlm_cfg.items() if k != "seed"})
        self.qa_cfg = {**QA_DEFAULTS, **dict(qa or {})}
        unknown = set(self.qa_cfg) - set(QA_DEFAULTS)
        if unknown:
            raise ValueError(f"qa has unknown keys {sorted(unknown)}: the keys are {sorted(QA_DEFAULTS)}")
        if int(self.qa_cfg["max_answer_tokens"]) < 1:
            raise ValueError(f"qa.max_answer_tokens={self.qa_cfg['max_answer_tokens']} must be >= 1 (HF: 30)")
        self.net = build_task_model(task, num_classes=num_classes, vocab_size=vocab_size, max_seq_len=max_seq_len,
                                    pad_id=None if (byte_data and task == "mlm") else pad_id, **dict(model))
        self.optimizer_cfg = dict(optimizer or {})
        unknown = set(self.optimizer_cfg) - OPTIMIZER_KEYS
        if unknown:
            raise ValueError(f"optimizer has unknown keys {sorted(unknown)}: the keys are {sorted(OPTIMIZER_KEYS)}")
        if self.optimizer_cfg.get("fused") not in (None, True, False):
            raise ValueError(f"optimizer.fused={self.optimizer_cfg['fused']!r} must be true, false or null")
        self.in_backward: OptimizerInBackward | None = None
        self.scheduler_cfg = dict(scheduler or {})
        decay = self.scheduler_cfg.get("decay", "cosine")
        if decay not in DECAYS:
            raise ValueError(f"scheduler.decay={decay!r} is unknown: choose one of {list(DECAYS)}")
        if task == "lm":
            for stage in ("train", "val", "test"):
                setattr(self, f"{stage}_nll", MeanMetric())
                setattr(self, f"{stage}_bpb", BitsPerByte())
        elif task == "mlm":
            for stage in ("train", "val", "test"):
                setattr(self, f"{stage}_mlm_nll", MeanMetric())
                setattr(self, f"{stage}_mlm_acc", MeanMetric())
                setattr(self, f"{stage}_bpt", BitsPerByte())
        elif task in WINDOW_TASKS:
            for stage in ("train", "val", "test"):
                setattr(self, f"{stage}_loss_mean", MeanMetric())
            if task == "multilabel":
                for stage in ("val", "test"):
                    setattr(self, f"{stage}_f1", multilabel_f1_metrics(num_classes, self.net.threshold,
                                                                       IGNORE_INDEX).clone(prefix=f"{stage}/"))
            elif task == "qa":
                for stage in ("val", "test"):
                    setattr(self, f"{stage}_squad", SquadScores())
                self.qa_candidates: dict[str, list] = {"val": [], "test": []}
            elif label_names is not None:
                self._make_seqeval(label_names)
        else:
            for stage in ("train", "val", "test"):
                setattr(self, f"{stage}_acc", MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE_INDEX))

    def _make_seqeval(self, label_names: Sequence[str]) -> None:
        for stage in ("val", "test"):
            setattr(self, f"{stage}_seqeval", DocumentSeqevalScores(label_names, ignore_index=IGNORE_INDEX))
        self.hparams["label_names"] = list(label_names)

    def setup(self, stage: str) -> None:
        """token_classification without ``label_names``: the seqeval metrics get the data module's ``label_names``.

        Raises:
            ValueError: no ``label_names`` anywhere (names the data module's attribute to add).
        """
        if self.task != "token_classification" or hasattr(self, "val_seqeval"):
            return
        dm = getattr(self.trainer, "datamodule", None)
        names = getattr(dm, "label_names", None)
        if names is None:
            raise ValueError("task=token_classification needs the tag names for seqeval: give the data module a "
                             "label_names attribute (tag id -> 'O' / 'B-<type>' / 'I-<type>') or pass label_names")
        self._make_seqeval(names)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Any:
        """Logits: (B, C) for classification / retrieval, (B, N, V) for lm, (B, N, V + 1) for mlm (of the batch as
        given: masking is :meth:`mask_batch`'s job), (B, L) for multilabel, (B, N, C) for token_classification,
        ``(start_logits, end_logits)`` (B, N) each for qa (masked outside ``context_mask`` except CLS)."""
        args = [batch["input_ids"], batch.get("padding_mask"), batch.get("global_attention_mask")]
        if self.task == "retrieval":
            args += [batch.get("input_ids_2"), batch.get("padding_mask_2"), batch.get("global_attention_mask_2")]
        if self.task == "qa":
            args.append(batch.get("context_mask"))
        return self.net(*args)

    def _step(self, batch, stage: str, batch_idx: int = 0) -> torch.Tensor:
        if self.task == "mlm":
            return self._mlm_step(batch, stage, batch_idx)
        if self.task == "lm":
            return self._lm_step(batch, stage)
        if self.task in WINDOW_TASKS:
            return getattr(self, f"_{self.task}_step")(batch, stage)
        metric = getattr(self, f"{stage}_acc")
        logits = self(batch)
        labels = batch["labels"]
        bsz = int((labels != IGNORE_INDEX).sum())  # IGNORE_INDEX: a sample repeated to even out DDP shards
        if bsz:
            loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)
        else:  # only repeated samples: no contribution, but every parameter still gets a (zero) gradient
            loss = logits.float().sum() * 0.0
        metric.update(logits.detach(), labels)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=bsz, sync_dist=not on_step)
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=True, batch_size=bsz)
        return loss

    @staticmethod
    def real_rows(batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """(B,) bool: the samples that are not repeats marked by the DDP sampler (class label, or every LM label,
        ``IGNORE_INDEX``); None when the batch has no labels."""
        labels = batch.get("labels")
        if labels is None:
            return None
        return labels != IGNORE_INDEX if labels.dim() == 1 else (labels != IGNORE_INDEX).any(-1)

    def lm_labels(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Next-token labels: the batch's own for LM data, else derived from ``input_ids`` (document 1 for
        retrieval) by :func:`~longdoc.models.next_token_targets` (``<pad>`` / ``<cls>`` never targets)."""
        if self.data_task == "lm":
            return batch["labels"]
        return next_token_targets(batch["input_ids"], batch.get("padding_mask"), special_ids=self.special_ids,
                                  row_mask=self.real_rows(batch), ignore_index=IGNORE_INDEX)

    def mask_generator(self, stage: str, batch_idx: int, device: torch.device) -> torch.Generator | None:
        """None for training (the global generator, seeded per batch by ReproducibleRNG); for validation / test a
        generator on ``device`` seeded by ``(mlm.seed, stage, batch_idx, global rank)``: the same masks each time."""
        if stage == "train":
            return None
        words = np.random.SeedSequence([int(self.mlm_cfg["seed"]) & 0xFFFFFFFF, _STAGE_STREAM[stage], int(batch_idx),
                                        int(self.global_rank)]).generate_state(2)
        gen = torch.Generator(device=device)
        gen.manual_seed((int(words[0]) << 32 | int(words[1])) & 0x7FFF_FFFF_FFFF_FFFF)
        return gen

    def mask_batch(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(masked_ids, labels)`` of document 1 (:func:`~longdoc.models.mask_tokens` with the ``mlm`` settings;
        the mask token is ``mask_token_id``; ``special_ids``, global tokens, padding and DDP repeats never
        masked)."""
        opts = {k: v for k, v in self.mlm_cfg.items() if k != "seed"}
        return mask_tokens(batch["input_ids"], batch.get("padding_mask"), vocab_size=self.vocab_size,
                           mask_token_id=self.mask_token_id, special_ids=self.special_ids,
                           global_attention_mask=batch.get("global_attention_mask"), row_mask=self.real_rows(batch),
                           ignore_index=IGNORE_INDEX, generator=generator, **opts)

    @staticmethod
    def _update_token_nll(nll: MeanMetric, bits: MeanMetric, loss: torch.Tensor, count: torch.Tensor,
                          stage: str) -> bool:
        """Accumulate a batch's mean NLL, weighted by its ``count`` targets, into ``nll`` and the bits metric;
        returns whether the value is also logged per step (training)."""
        value, on_step = loss.detach(), stage == "train"
        if on_step:
            nll(value, count)  # forward: accumulates and gives the batch value for the per-step log
        else:
            nll.update(value, count)
        bits.update(value, count)
        return on_step

    def _mlm_step(self, batch, stage: str, batch_idx: int) -> torch.Tensor:
        masked, labels = self.mask_batch(batch, self.mask_generator(stage, batch_idx, batch["input_ids"].device))
        logits = self.net(masked, batch.get("padding_mask"), batch.get("global_attention_mask"))
        loss, count, correct = masked_lm_loss(logits, labels, IGNORE_INDEX)
        nll, acc, bpt = (getattr(self, f"{stage}_{name}") for name in ("mlm_nll", "mlm_acc", "bpt"))
        on_step = self._update_token_nll(nll, bpt, loss, count, stage)
        acc.update(correct.float() / count.clamp_min(1), count)  # weighted: sum(correct) / sum(count)
        self.log(f"{stage}/mlm_loss", nll, on_step=on_step, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/mlm_acc", acc, on_step=False, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/bpt", bpt, on_step=False, on_epoch=True)
        return loss

    def _lm_step(self, batch, stage: str) -> torch.Tensor:
        loss, count = next_token_loss(self(batch), self.lm_labels(batch), IGNORE_INDEX)
        nll, bpb = getattr(self, f"{stage}_nll"), getattr(self, f"{stage}_bpb")
        on_step = self._update_token_nll(nll, bpb, loss, count, stage)
        self.log(f"{stage}/loss", nll, on_step=on_step, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/bpb", bpb, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def _log_mean_loss(self, stage: str, loss: torch.Tensor, count: torch.Tensor, logits: Any) -> torch.Tensor:
        """Accumulate the batch's mean loss weighted by its ``count`` targets and log ``{stage}/loss`` (the epoch
        value is the mean over all targets: exact under DDP); returns the loss to optimise (a zero that still reaches
        every parameter when the batch has no target, e.g. only DDP repeats)."""
        mean, on_step = getattr(self, f"{stage}_loss_mean"), stage == "train"
        if on_step:
            mean(loss.detach(), count)
        else:
            mean.update(loss.detach(), count)
        self.log(f"{stage}/loss", mean, on_step=on_step, on_epoch=True, prog_bar=True)
        if int(count) == 0:
            parts = logits if isinstance(logits, tuple) else (logits,)
            return sum(p.float().masked_fill(p == torch.finfo(p.dtype).min, 0).sum() for p in parts) * 0.0
        return loss

    def _multilabel_step(self, batch, stage: str) -> torch.Tensor:
        logits, labels = self(batch), batch["labels"]
        loss, count = multilabel_loss(logits, labels, IGNORE_INDEX)
        if stage != "train":
            f1 = getattr(self, f"{stage}_f1")
            f1.update(logits.detach(), labels.long())
            self.log_dict(f1, on_step=False, on_epoch=True, prog_bar=True)
        return self._log_mean_loss(stage, loss, count, logits)

    @staticmethod
    def document_positions(batch: Mapping[str, Any]) -> torch.Tensor | None:
        """(B, N) position of each column in its document: ``token_start + column - first context column`` (the
        ``collate_windows`` keys ``token_start`` and ``context_mask``), None without them."""
        if "token_start" not in batch or "context_mask" not in batch:
            return None
        ctx = batch["context_mask"]
        first = ctx.int().argmax(1)
        cols = torch.arange(ctx.shape[1], device=ctx.device)
        return batch["token_start"].to(ctx.device)[:, None] + cols[None, :] - first[:, None]

    def _token_classification_step(self, batch, stage: str) -> torch.Tensor:
        logits, labels = self(batch), batch["labels"]
        if stage != "train" and batch.get("owned_mask") is not None:  # each document token once: its owner window
            labels = labels.masked_fill(~batch["owned_mask"], IGNORE_INDEX)
        loss, count = token_classification_loss(logits, labels, IGNORE_INDEX)
        if stage != "train":
            getattr(self, f"{stage}_seqeval").update(logits.detach().argmax(-1), labels, batch.get("example_index"),
                                                     self.document_positions(batch))
        return self._log_mean_loss(stage, loss, count, logits)

    def _qa_step(self, batch, stage: str) -> torch.Tensor:
        start, end = self(batch)
        loss, count = qa_loss(start, end, batch["start_positions"], batch["end_positions"], IGNORE_INDEX)
        if stage != "train":
            self.qa_candidates[stage].extend(window_candidates(
                batch, start, end, max_answer_tokens=int(self.qa_cfg["max_answer_tokens"]), ignore_index=IGNORE_INDEX))
        return self._log_mean_loss(stage, loss, count, (start, end))

    def _log_epoch_scores(self, stage: str) -> None:
        """The epoch-end metrics of token_classification (seqeval) and qa (SQuAD), logged as ``{stage}/...`` and
        reset."""
        if self.task == "token_classification":
            metric = getattr(self, f"{stage}_seqeval")
            scores = metric.compute()  # gathers every rank's tokens
            names = {"f1": "f1", "precision": "precision", "recall": "recall", "accuracy": "token_acc"}
            for key, name in names.items():
                self.log(f"{stage}/{name}", scores[key].to(self.device), prog_bar=name == "f1", sync_dist=False)
            metric.reset()
        elif self.task == "qa":
            answers = pick_answers(gather_objects(self.qa_candidates[stage]), no_answer=bool(self.qa_cfg["no_answer"]),
                                   null_threshold=float(self.qa_cfg["null_threshold"]))
            self.qa_candidates[stage] = []
            world, rank = max(1, int(self.trainer.world_size)), int(self.global_rank)
            mine = [pair for i, pair in enumerate(answers.values()) if i % world == rank]  # each example on one rank
            metric = getattr(self, f"{stage}_squad")
            metric.update([p for p, _ in mine], [list(g) for _, g in mine])
            scores = metric.compute()  # sums over the ranks
            for key in ("exact_match", "f1"):
                self.log(f"{stage}/{key}", scores[key].float().to(self.device), prog_bar=True, sync_dist=False)
            metric.reset()

    def on_validation_epoch_start(self):
        if self.task == "qa":
            self.qa_candidates["val"] = []

    def on_validation_epoch_end(self):
        if self.task in ("token_classification", "qa"):
            self._log_epoch_scores("val")

    def on_test_epoch_start(self):
        if self.task == "qa":
            self.qa_candidates["test"] = []

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train", batch_idx)

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val", batch_idx)

    def test_step(self, batch, batch_idx):
        self._step(batch, "test", batch_idx)

    def on_test_epoch_end(self):
        if self.task in ("token_classification", "qa"):
            self._log_epoch_scores("test")
        dm = getattr(self.trainer, "datamodule", None)
        if self.task == "mlm" or self.task != self.data_task:  # the data's baselines are for its own task
            return
        if self.task in WINDOW_TASKS:  # e.g. {"f1_micro": ...} of the most frequent label set / tag
            for key, value in dict(getattr(dm, "baseline_scores", None) or {}).items():
                self.log(f"test/baseline_{key}", float(value), sync_dist=False)
            return
        if self.task == "lm":
            base = getattr(dm, "unigram_bits_per_byte", None)
            if base is not None:
                self.log("test/unigram_bpb", float(base), sync_dist=False)
            return
        base = getattr(dm, "majority_class_accuracy", None)
        if base is not None:
            self.log("test/majority_acc", float(base), sync_dist=False)

    def _fused_adamw(self, fused: bool | None) -> bool:
        """``optimizer.fused``: None -> torch's fused AdamW when every trainable parameter is a floating-point
        tensor on the CPU or a CUDA device (the devices its kernel runs on) and gradients are not clipped under a
        mixed precision (Lightning's AMP plugin cannot clip what the fused step unscales itself); True insists
        (ValueError naming the parameter or the setting otherwise), False keeps the per-tensor loop."""
        if fused is False:
            return False
        trainer = self._trainer
        precision = str(getattr(trainer, "precision", "32-true"))
        clip = getattr(trainer, "gradient_clip_val", None)
        if fused_adamw_blocks_clipping(precision, clip):
            if fused:
                raise ValueError(f"optimizer.fused=true cannot go with trainer.precision={precision} and "
                                 f"trainer.gradient_clip_val={clip}: set optimizer.fused=null or false")
            return False
        for name, p in self.named_parameters():
            if p.requires_grad and (not p.is_floating_point() or p.device.type not in ("cpu", "cuda")):
                if fused:
                    raise ValueError(f"optimizer.fused=true: parameter {name} is {p.dtype} on {p.device.type}, which "
                                     "torch's fused AdamW does not run on; set optimizer.fused=null or false")
                return False
        return True

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = {"lr": 1e-3, "weight_decay": 0.01, "betas": (0.9, 0.98), "eps": 1e-8, **self.optimizer_cfg}
        ratio = float(cfg.get("encoder_lr_ratio", 1.0) or 1.0)
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for name, p in self.named_parameters():  # a tied weight comes once
            if not p.requires_grad:
                continue
            no_decay = p.dim() < 2 or "norm" in name or name.endswith(".e1") or name.endswith(".e2")
            in_encoder = ratio != 1.0 and name.startswith("net.encoder.")
            groups.setdefault((in_encoder, no_decay), []).append(p)
        # (encoder?, no decay?) -> one AdamW group; the encoder's learning rate is optimizer.lr * encoder_lr_ratio
        opt = torch.optim.AdamW(
            [{"params": groups[key], "weight_decay": 0.0 if key[1] else cfg["weight_decay"],
              "lr": cfg["lr"] * (ratio if key[0] else 1.0)}
             for key in sorted(groups, key=lambda k: (not k[0], k[1])) if groups[key]],
            lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"], fused=self._fused_adamw(cfg.get("fused")),
        )
        if self.in_backward is not None:  # configure_optimizers ran before (e.g. a second fit)
            self.in_backward.remove()
            self.in_backward = None
        if cfg.get("in_backward", False):
            # validate_config refuses the DDP configs it can see; the trainer knows the real process count
            # (torchrun, SLURM, devices=auto on a multi-GPU node), and this runs before the first step
            world = getattr(self.trainer, "world_size", 1) if self.trainer is not None else 1
            if world > 1:
                raise ValueError(f"optimizer.in_backward=true runs in one process, but this trainer has {world}: each "
                                 "rank would step on its own gradient before DDP's all-reduce; set "
                                 "optimizer.in_backward=false")
            # each parameter steps from its gradient hook; Lightning's opt.step() then finds no gradients
            self.in_backward = OptimizerInBackward(opt)
        total = int(self.trainer.estimated_stepping_batches) if self.trainer is not None else 1
        warmup = self.scheduler_cfg.get("warmup_steps")
        if warmup is None:
            warmup = int(self.scheduler_cfg.get("warmup_ratio", 0.1) * total)
        decay = self.scheduler_cfg.get("decay", "cosine")
        if decay == "rsqrt":
            def lr_lambda(s):
                return warmup_rsqrt(s, warmup_steps=warmup)
        elif decay == "constant":
            def lr_lambda(s):
                return warmup_constant(s, warmup_steps=warmup)
        else:
            min_ratio = float(self.scheduler_cfg.get("min_lr_ratio", 0.1))

            def lr_lambda(s):
                return warmup_cosine(s, warmup_steps=warmup, total_steps=total, min_lr_ratio=min_ratio)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
