"""A pretrained checkpoint's own tokenizer (``tokenizer.json``, HF ``tokenizers``) for the text data modules.

``data.tokenizer_file`` (text classification, LRA text / retrieval, stdlib packages) names a ``tokenizer.json`` or
a checkpoint directory holding one; it follows ``model.pretrained.path`` by default, so ``model=pretrained`` feeds
the encoder the ids it was trained on. Documents are then encoded with the tokenizer's own template (BERT:
``[CLS] text [SEP]``, RoBERTa / Longformer: ``<s> text </s>``) when ``add_cls`` is true, without special tokens
otherwise; ``max_length`` counts the text's tokens (the template's special tokens come on top, as ``<cls>`` does for
bytes), and position 0 (``[CLS]`` / ``<s>``) is the global token. The padding id is the tokenizer's own. Any
truncation or padding stored in ``tokenizer.json`` (sentence-transformers store 128 / 512) is switched off: longdoc
truncates to ``max_length`` and pads each batch to its longest sample.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import BYTE_VOCAB_SIZE, DataNotFoundError

logger = logging.getLogger("longdoc.data")

__all__ = ["MASK_TOKEN_NAMES", "PAD_TOKEN_NAMES", "PretrainedTokenizer", "PretrainedTokenizerMixin", "resolve_tokenizer_file"]

#: Padding tokens looked up when neither ``special_tokens_map.json`` nor ``tokenizer.json`` names one.
PAD_TOKEN_NAMES: tuple[str, ...] = ("[PAD]", "<pad>", "<|pad|>")
#: Mask tokens (BERT, RoBERTa / Longformer) looked up when ``special_tokens_map.json`` names none.
MASK_TOKEN_NAMES: tuple[str, ...] = ("[MASK]", "<mask>")


def resolve_tokenizer_file(path: str | os.PathLike) -> Path:
    """``path`` itself (a ``tokenizer.json``) or ``<path>/tokenizer.json`` (a checkpoint directory).

    Raises:
        DataNotFoundError: neither exists (names ``data.tokenizer_file`` and the files found).
    """
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir() and (path / "tokenizer.json").is_file():
        return path / "tokenizer.json"
    found = sorted(p.name for p in path.iterdir())[:20] if path.is_dir() else []
    raise DataNotFoundError(f"data.tokenizer_file={str(path)!r}: no tokenizer.json there"
                            + (f" (found: {', '.join(found) or 'nothing'})" if path.is_dir() else "")
                            + "; give a HF tokenizers tokenizer.json or a checkpoint directory holding one (a "
                            "transformers tokenizer saves it with save_pretrained), or data.tokenizer_file=null")


def _token_from_map(folder: Path, key: str = "pad_token") -> str | None:
    """The ``key`` token (``pad_token``, ``mask_token``, ...) named by ``special_tokens_map.json`` or
    ``tokenizer_config.json`` in ``folder``, or None."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        f = folder / name
        if not f.is_file():
            continue
        try:
            tok = json.loads(f.read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(tok, dict):
            tok = tok.get("content")
        if isinstance(tok, str):
            return tok
    return None


def _first_id(tok: Any, names: Sequence[str | None]) -> int | None:
    """The id of the first of ``names`` (None entries skipped) in ``tok``'s vocabulary, or None."""
    return next((int(i) for i in (tok.token_to_id(t) for t in names if t is not None) if i is not None), None)


class PretrainedTokenizer:
    """A ``tokenizer.json`` loaded with HF ``tokenizers``, truncation and padding off.

    Args:
        path: a ``tokenizer.json`` or a directory holding one (:func:`resolve_tokenizer_file`).

    Attributes:
        file: the tokenizer file. vocab_size: ids incl. added tokens. pad_id: the padding id (from
            ``special_tokens_map.json`` / ``tokenizer_config.json`` beside it, else the padding stored in
            ``tokenizer.json``, else one of :data:`PAD_TOKEN_NAMES`). num_special_tokens: ids the template adds to
            one sequence (BERT / RoBERTa: 2). mask_id: the mask token's id (``mask_token`` of
            ``special_tokens_map.json`` / ``tokenizer_config.json``, else one of :data:`MASK_TOKEN_NAMES`), or None
            without one. special_ids: sorted ids of every special token -- the added tokens marked special
            (BERT: ``[PAD] [UNK] [CLS] [SEP] [MASK]``), the template's own and the padding / mask ids -- which the
            MLM / LM objectives never mask, draw or predict.

    Raises:
        DataNotFoundError: no tokenizer file. ValueError: unreadable, or no padding token found.
    """

    def __init__(self, path: str | os.PathLike):
        from tokenizers import Tokenizer

        self.file = resolve_tokenizer_file(path)
        try:
            tok = Tokenizer.from_file(str(self.file))
        except Exception as err:  # tokenizers raises its own Exception type
            raise ValueError(f"data.tokenizer_file={str(self.file)!r} cannot be read by HF tokenizers ({err})") from err
        stored_pad = (tok.padding or {}).get("pad_token")
        tok.no_truncation()
        tok.no_padding()
        self.tokenizer = tok
        self.vocab_size = int(tok.get_vocab_size(with_added_tokens=True))
        candidates = [_token_from_map(self.file.parent), stored_pad, *PAD_TOKEN_NAMES]
        pad = _first_id(tok, candidates)
        if pad is None:
            raise ValueError(f"data.tokenizer_file={str(self.file)!r} has no padding token (looked for "
                             f"{[c for c in candidates if c]}); add one to the tokenizer")
        self.pad_id = int(pad)
        post = tok.post_processor
        self.num_special_tokens = int(post.num_special_tokens_to_add(False)) if post is not None else 0
        self.mask_id: int | None = _first_id(tok, [_token_from_map(self.file.parent, "mask_token"), *MASK_TOKEN_NAMES])
        specials = {i for i, added in tok.get_added_tokens_decoder().items() if added.special}
        specials.update(tok.encode("", add_special_tokens=True).ids)  # the template's ([CLS] [SEP], <s> </s>)
        specials.add(self.pad_id)
        if self.mask_id is not None:
            specials.add(self.mask_id)
        self.special_ids: tuple[int, ...] = tuple(sorted(int(i) for i in specials))

    def encode(self, texts: Sequence[Any], max_length: int,
               add_special_tokens: bool = True) -> tuple[list[np.ndarray], int]:
        """Token ids of each text (``str``, or ``bytes`` decoded as UTF-8 with replacement), cut to ``max_length``
        text tokens, with the template's special tokens when ``add_special_tokens``.

        Returns:
            ``(ids, cut)``: one (L_i,) int32 array per text (``L_i <= max_length + num_special_tokens``) and how many
            texts were cut.
        """
        plain = self.tokenizer.encode_batch([_as_text(t) for t in texts], add_special_tokens=False)
        out, cut = [], 0
        for e in plain:
            if len(e.ids) > max_length:
                cut += 1
                e.truncate(max_length)
            if add_special_tokens:
                e = self.tokenizer.post_process(e, None, True)
            out.append(np.asarray(e.ids, dtype=np.int32))
        return out, cut

    def describe(self) -> dict[str, Any]:
        """``{"file", "vocab_size", "pad_id", "num_special_tokens", "mask_id", "special_ids"}`` for log lines."""
        return {"file": str(self.file), "vocab_size": self.vocab_size, "pad_id": self.pad_id,
                "num_special_tokens": self.num_special_tokens, "mask_id": self.mask_id,
                "special_ids": list(self.special_ids)}


def _as_text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    return "" if value is None else str(value)


class PretrainedTokenizerMixin:
    """``data.tokenizer_file`` for a :class:`~longdoc.data.LongDocDataModule` subclass (put it first among the
    bases): with a file, :attr:`pad_id` is the tokenizer's, :meth:`token_bound` counts its special tokens and
    :meth:`encode_texts` encodes with it (see the module docstring); without one (``None``) the subclass's own byte
    tokenisation applies. The subclass sets ``self.tokenizer_file`` in its constructor.
    """

    tokenizer_file: str | os.PathLike | None = None
    _pretrained_tokenizer: PretrainedTokenizer | None = None

    @property
    def pretrained_tokenizer(self) -> PretrainedTokenizer | None:
        """The :class:`PretrainedTokenizer` of ``tokenizer_file`` (loaded on first use), or None."""
        if self.tokenizer_file is None:
            return None
        if self._pretrained_tokenizer is None:
            self._pretrained_tokenizer = PretrainedTokenizer(self.tokenizer_file)
            logger.info("%s: tokens from %s", getattr(self, "display_name", "data"),
                        ", ".join(f"{k} {v}" for k, v in self._pretrained_tokenizer.describe().items()))
        return self._pretrained_tokenizer

    @property
    def pad_id(self) -> int:
        """The tokenizer's padding id with ``tokenizer_file``, else the data's own (0)."""
        tok = self.pretrained_tokenizer
        return tok.pad_id if tok is not None else super().pad_id  # type: ignore[misc]

    @property
    def vocab_size(self) -> int:
        """258: ``<pad>``, ``<cls>`` and 256 byte values (the pretrained tokenizer's with ``tokenizer_file``); a
        subclass with another tokenisation of its own overrides it."""
        tok = self.pretrained_tokenizer
        return BYTE_VOCAB_SIZE if tok is None else tok.vocab_size

    @property
    def special_ids(self) -> tuple[int, ...] | None:
        """With ``tokenizer_file``: the tokenizer's special ids (:attr:`PretrainedTokenizer.special_ids`), which the
        MLM / LM objectives never mask, draw or predict; None without one (the objectives' own: ``<pad>``, ``<cls>``)."""
        tok = self.pretrained_tokenizer
        return None if tok is None else tok.special_ids

    @property
    def mask_token_id(self) -> int | None:
        """With ``tokenizer_file``: the tokenizer's mask token id (``[MASK]`` / ``<mask>``, None if it has none);
        None without one (MLM then uses the extra id ``vocab_size``)."""
        tok = self.pretrained_tokenizer
        return None if tok is None else tok.mask_id

    def token_bound(self, max_length: int) -> int:
        """Longest sample for ``max_length`` text tokens: + the template's special tokens (with ``add_cls``) with
        ``tokenizer_file``, else + 1 for ``<cls>``."""
        add_cls = bool(getattr(self, "add_cls", True))
        tok = self.pretrained_tokenizer
        if tok is None:
            return max_length + int(add_cls)
        return max_length + (tok.num_special_tokens if add_cls else 0)

    def encode_texts(self, texts: Sequence[Any], max_length: int) -> tuple[list[np.ndarray], int]:
        """``texts`` (str, or bytes decoded as UTF-8 with replacement) -> token ids with ``tokenizer_file``
        (:meth:`PretrainedTokenizer.encode`, special tokens iff ``add_cls``); returns ``(ids, number cut)``.

        Raises:
            RuntimeError: called without ``tokenizer_file``.
        """
        tok = self.pretrained_tokenizer
        if tok is None:
            raise RuntimeError("encode_texts needs data.tokenizer_file")
        return tok.encode(texts, max_length, bool(getattr(self, "add_cls", True)))
