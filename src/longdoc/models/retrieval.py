"""Two-tower (dual encoder) document matching: LRA Retrieval (Tay et al. 2021, section 3.3)."""

from __future__ import annotations

import torch
from torch import nn

from .encoder import Encoder
from .heads import RetrievalHead


class RetrievalClassifier(nn.Module):
    """One :class:`Encoder` applied to both documents (shared weights, no cross-attention between them),
    then :class:`RetrievalHead` on the two pooled encodings (LRA section 3.3: "a two-tower model",
    the documents are encoded separately so the task measures compression of each into one vector).

    Args:
        num_classes: C (2 for AAN). pooling: 'cls' | 'mean'. head_dropout: head dropout (default: ``dropout``).
        interaction: 'nli' (``[u, v, u*v, u-v]``, default) | 'concat' (``[u, v]``), see :class:`RetrievalHead`.
        **encoder_kwargs: everything :class:`Encoder` takes (vocab_size, d_model, n_heads, depth, d_ff,
            attention, position, max_seq_len, dropout, pad_id, chunk_size_feed_forward, ...).

    ``forward(input_ids (B, N1) int64, padding_mask (B, N1) bool = None, global_attention_mask (B, N1) bool = None,
    input_ids_2 (B, N2) int64, padding_mask_2 = None, global_attention_mask_2 = None) -> (B, C)`` logits.
    ``max_seq_len`` must cover the longer of N1 and N2.

    Raises:
        ValueError: from :class:`Encoder` / :class:`RetrievalHead` for invalid settings (key named).
    """

    def __init__(self, num_classes: int, pooling: str = "cls", head_dropout: float | None = None,
                 interaction: str = "nli", **encoder_kwargs):
        super().__init__()
        self.encoder = Encoder(**encoder_kwargs)
        drop = encoder_kwargs.get("dropout", 0.1) if head_dropout is None else head_dropout
        self.head = RetrievalHead(encoder_kwargs["d_model"], num_classes, pooling, drop, interaction)

    def encode_pair(self, input_ids, padding_mask=None, global_attention_mask=None, input_ids_2=None,
                    padding_mask_2=None, global_attention_mask_2=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The two towers' hidden states: ``((B, N1, D), (B, N2, D))``, both from ``self.encoder``.

        Raises:
            ValueError: ``input_ids_2`` missing.
        """
        if input_ids_2 is None:
            raise ValueError("retrieval needs two documents per sample: the batch has no 'input_ids_2' "
                             "(use a retrieval data module such as data=lra_retrieval)")
        return (self.encoder(input_ids, padding_mask, global_attention_mask),
                self.encoder(input_ids_2, padding_mask_2, global_attention_mask_2))

    def forward(self, input_ids, padding_mask=None, global_attention_mask=None, input_ids_2=None,
                padding_mask_2=None, global_attention_mask_2=None):
        h1, h2 = self.encode_pair(input_ids, padding_mask, global_attention_mask,
                                  input_ids_2, padding_mask_2, global_attention_mask_2)
        return self.head(h1, h2, padding_mask, padding_mask_2)
