"""Long Range Arena "Retrieval": byte-level document matching on the ACL Anthology Network
(AAN; Tay et al. 2021, section 3.3), two documents per sample, 2 classes (1 = one paper cites the other).

Data: LRA's released ``new_aan_pairs.train.tsv``, ``new_aan_pairs.eval.tsv`` and
``new_aan_pairs.test.tsv`` (archive ``lra_release.gz``,
https://storage.googleapis.com/long-range-arena/lra_release.gz, folder ``lra_release/tsv_data``).

File format, as read by LRA's ``lra_benchmarks/matching/input_pipeline.py`` (``get_tsv_dataset``:
``tf.data.experimental.make_csv_dataset`` with ``column_names=['label', 'id1', 'id2', 'text1',
'text2']``, ``field_delim='\\t'``, ``use_quote_delim=False``, ``header=False``, label parsed as
float): one pair per line, five tab-separated fields, no header, no quoting. ``train`` / ``eval`` /
``test`` are our ``train`` / ``val`` / ``test``.

Tokenisation as LRA's ``tokenizer='char'``: the raw bytes of each text field
(``ByteTextEncoder().encode(s[:10000])[:max_length]``, i.e. the first ``max_length`` bytes). The
released text fields are written as Python bytes literals (``b'...'``, with escapes); LRA encodes
them verbatim, and so do we by default (``unescape=False``); ``unescape=True`` decodes the literal
first (:func:`ast.literal_eval`), giving the papers' actual bytes.

Token ids: ``0`` pad, ``1`` CLS, byte ``b`` -> ``b + 2`` (see :mod:`longdoc.data.base`). With ``tokenizer_file`` (a
pretrained ``tokenizer.json``; ``model=pretrained`` sets it) each document is decoded as UTF-8 and encoded with that
tokenizer instead (:mod:`longdoc.data.pretrained_tokenizer`): ``max_length`` counts its tokens, and its template
replaces ``<cls>``.
"""

from __future__ import annotations

import ast
import logging
import os
from pathlib import Path

import numpy as np

from .base import DataNotFoundError, LongDocDataModule, PairedSequenceDataset
from .tokenization import DocumentTokenizerMixin

logger = logging.getLogger("longdoc.data")

__all__ = ["AAN_HINT", "AAN_SPLIT_FILES", "LRARetrievalDataModule", "find_aan_files", "read_aan_tsv"]

#: Where the AAN files come from (used in error messages).
AAN_HINT = (
    "LRA's released new_aan_pairs.{train,eval,test}.tsv from lra_release.gz "
    "(https://storage.googleapis.com/long-range-arena/lra_release.gz, folder lra_release/tsv_data)"
)
#: Our split -> LRA's file suffix.
AAN_SPLIT_FILES = {"train": "train", "val": "eval", "test": "test"}


def _unescape(field: bytes, where: str) -> bytes:
    if len(field) >= 3 and field[:1] == b"b" and field[1:2] in (b"'", b'"') and field[-1:] == field[1:2]:
        try:
            value = ast.literal_eval(field.decode("latin-1"))
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"{where}: cannot decode the bytes literal: {err}") from err
        if isinstance(value, bytes):
            return value
    return field


def read_aan_tsv(
    path: str | os.PathLike, max_length: int | None = None, unescape: bool = False
) -> tuple[np.ndarray, list[bytes], list[bytes]]:
    """Read one LRA AAN file: ``(labels (num_pairs,) int64, text1 bytes, text2 bytes)``.

    Lines are split on ``\\n`` (a trailing ``\\r`` is dropped) and fields on ``\\t``, without
    quoting (LRA's ``use_quote_delim=False``); empty lines are skipped. Texts are kept as raw bytes
    and cut to ``max_length`` bytes (``None``: not cut).

    Args:
        path: the ``.tsv`` file.
        max_length: bytes kept per document.
        unescape: decode ``b'...'`` bytes-literal fields first (see the module docstring).

    Raises:
        DataNotFoundError: the file does not exist.
        ValueError: a line without exactly 5 fields, or a label that is not 0 or 1 (``file:line``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path} does not exist; data.path must hold {AAN_HINT}")
    labels: list[int] = []
    text1: list[bytes] = []
    text2: list[bytes] = []
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip(b"\n")
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                continue
            fields = line.split(b"\t")
            if len(fields) != 5:
                raise ValueError(
                    f"{path}:{lineno}: expected 5 tab-separated fields (label, id1, id2, text1, text2), got {len(fields)}"
                )
            try:
                value = float(fields[0])
            except ValueError:
                value = float("nan")
            if value not in (0.0, 1.0):
                raise ValueError(f"{path}:{lineno}: label must be 0 or 1, got {fields[0][:20]!r}")
            a, b = fields[3], fields[4]
            if unescape:
                a, b = _unescape(a, f"{path}:{lineno}"), _unescape(b, f"{path}:{lineno}")
            if max_length is not None:
                a, b = a[:max_length], b[:max_length]
            labels.append(int(value))
            text1.append(a)
            text2.append(b)
    return np.asarray(labels, dtype=np.int64), text1, text2


def find_aan_files(path: str | os.PathLike | None, file_prefix: str = "new_aan_pairs") -> dict[str, Path]:
    """Locate the three AAN files: ``{"train", "val", "test"} -> Path``.

    ``path`` may be the folder holding ``<file_prefix>.{train,eval,test}.tsv``, a folder with a
    ``tsv_data`` subfolder holding them, or the prefix itself (``.../new_aan_pairs``, as LRA's
    ``DATASET_PATHS``).

    Raises:
        DataNotFoundError: ``path`` is ``None`` or a file is missing (the message names ``data.path``).
    """
    if path is None:
        raise DataNotFoundError(f"LRA retrieval needs local files: set data.path to the folder with {AAN_HINT}")
    p = Path(path)
    candidates = [p / file_prefix, p / "tsv_data" / file_prefix, p]
    for prefix in candidates:
        files = {split: Path(f"{prefix}.{suffix}.tsv") for split, suffix in AAN_SPLIT_FILES.items()}
        if all(f.is_file() for f in files.values()):
            return files
    expected = ", ".join(f"{file_prefix}.{s}.tsv" for s in AAN_SPLIT_FILES.values())
    raise DataNotFoundError(f"data.path={str(path)!r} does not hold {expected}; set data.path to the folder with {AAN_HINT}")


class LRARetrievalDataModule(DocumentTokenizerMixin, LongDocDataModule):
    """LightningDataModule for LRA Retrieval (AAN document matching, section 3.3; 2 classes).

    Batches (two-tower): ``input_ids``, ``padding_mask``, ``global_attention_mask`` (B, N1) for
    document 1, ``input_ids_2``, ``padding_mask_2``, ``global_attention_mask_2`` (B, N2) for
    document 2 (``<cls>`` + byte + 2; masks bool, global True at position 0 with ``add_cls``) and
    ``labels`` LongTensor (B,). Batches are bucketed by ``max(L1, L2)``; ``max_tokens_per_batch``
    caps ``B * N`` of each document tensor.

    Args:
        path: folder with LRA's ``new_aan_pairs.{train,eval,test}.tsv`` (see :func:`find_aan_files`).
        file_prefix: file-name prefix (``new_aan_pairs``).
        max_length: bytes kept per document (> 0; LRA: 4000).
        unescape: decode the released ``b'...'`` literals (default False = as LRA).
        tokenizer_file: a pretrained ``tokenizer.json`` (or its directory) instead of bytes; None = bytes.
        seed, batch_size, max_tokens_per_batch, num_workers, bucket_by_length, add_cls: see
            :class:`~longdoc.data.base.LongDocDataModule`.

    Raises:
        ValueError: ``max_length <= 0``, invalid batching args; malformed lines (``setup``).
        DataNotFoundError: (``prepare_data`` / ``setup``) missing files; names ``data.path``.
    """

    task = "retrieval"
    display_name = "LRA retrieval (AAN)"

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        file_prefix: str = "new_aan_pairs",
        max_length: int = 4000,
        unescape: bool = False,
        seed: int = 0,
        batch_size: int = 32,
        max_tokens_per_batch: int | None = None,
        num_workers: int = 0,
        bucket_by_length: bool = True,
        add_cls: bool = True,
        tokenizer_file: str | os.PathLike | None = None,
    ):
        super().__init__(batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch, num_workers=num_workers,
                         bucket_by_length=bucket_by_length, add_cls=add_cls, seed=seed)
        self._init_tokenization(max_length, tokenizer_file)
        self.save_hyperparameters(logger=False)
        self.path, self.file_prefix, self.unescape = path, file_prefix, unescape

    @property
    def num_classes(self) -> int:
        """2 (not related, related)."""
        return 2

    def prepare_data(self) -> None:
        """Check that the three files exist.

        Raises:
            DataNotFoundError: missing files.
        """
        find_aan_files(self.path, self.file_prefix)

    def _build_datasets(self) -> dict[str, PairedSequenceDataset]:
        files = find_aan_files(self.path, self.file_prefix)
        tokenizer = self.document_tokenizer()
        out = {}
        for split, f in files.items():
            labels, t1, t2 = read_aan_tsv(f, tokenizer.read_limit, self.unescape)
            (first, cut1), (second, cut2) = (tokenizer.dataset(t, labels) for t in (t1, t2))
            logger.info("%s %s (%s): %d pairs, %s", self.display_name, split, f.name, len(labels),
                        tokenizer.truncation(cut1 + cut2, 2 * len(labels)))
            out[split] = PairedSequenceDataset(first, second)
        return out
