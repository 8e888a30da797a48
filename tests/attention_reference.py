"""The dense-mask attention: the truth the document-aware backends are tested against.

A [B, 1, T, T] mask (query i sees key j iff j <= i in the same document) through SDPA's math:
O(T²) memory, so it lives here and never in pgolf.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dense_document_mask(doc_id: torch.Tensor) -> torch.Tensor:
    t = doc_id.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=doc_id.device).tril()
    return (causal & (doc_id[:, :, None] == doc_id[:, None, :]))[:, None]


class DenseReference:
    """An attention backend (pgolf.model.attention_backends' signature) with the dense mask."""

    name = "dense"

    def prepare(self, segments):
        return dense_document_mask(segments.doc_id)

    def __call__(self, q, k, v, mask):
        gqa = k.size(1) != q.size(1)
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


def use_backend(model, backend) -> None:
    """Point a GPT and all its attention layers at `backend`."""
    model.attention_backend = backend
    for block in model.blocks:
        if hasattr(block.mixer, "backend"):
            block.mixer.backend = backend
