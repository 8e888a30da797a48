"""Where documents start inside a batch of token rows, for models that must not mix them.

Rows are [B, T] slices of a BOS-separated stream. With document isolation every mixer
restarts at each BOS and at each row start: the recurrent state (through cu_seqlens over
the flattened rows), the short convolutions and SmearGate (same_doc masks), the n-gram
hashes and attention (a block-diagonal causal mask).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class DocSegments:
    doc_id: Tensor  # [B, T] int64: documents counted from each row's start
    cu_seqlens: Tensor  # [S + 1] int64: segment starts in the flattened B*T tokens, then B*T
    attn_mask: Tensor | None = None  # [B, 1, T, T] bool (attention_mask), where the model has attention

    @staticmethod
    def from_tokens(input_ids: Tensor, bos_id: int, with_attention_mask: bool = False) -> "DocSegments":
        """The segments of a batch; the dense attention mask is built here, once per forward,
        only for models with attention layers (every one of them uses the same mask)."""
        is_bos = input_ids == bos_id
        starts = is_bos.clone()
        starts[:, 0] = True
        flat = starts.reshape(-1).nonzero().squeeze(1)
        total = torch.tensor([input_ids.numel()], device=input_ids.device, dtype=flat.dtype)
        segments = DocSegments(torch.cumsum(is_bos.long(), dim=1), torch.cat([flat, total]))
        if with_attention_mask:
            segments = DocSegments(segments.doc_id, segments.cu_seqlens, segments.attention_mask())
        return segments

    def same_doc(self, lag: int) -> Tensor:
        """[B, T] bool: position t − lag exists in the row and is in t's document."""
        out = torch.zeros_like(self.doc_id, dtype=torch.bool)
        out[:, lag:] = self.doc_id[:, lag:] == self.doc_id[:, :-lag]
        return out

    def attention_mask(self) -> Tensor:
        """[B, 1, T, T] bool, True where query i may attend to key j: j <= i in the same document."""
        t = self.doc_id.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=self.doc_id.device).tril()
        return (causal & (self.doc_id[:, :, None] == self.doc_id[:, None, :]))[:, None]


def shift_within(x: Tensor, lag: int, segments: DocSegments | None) -> Tensor:
    """x_{t−lag} along dim 1 ([B, T, ...]), zero where it is before the row or (with segments) in another document."""
    shifted = torch.zeros_like(x)
    shifted[:, lag:] = x[:, :-lag]
    if segments is not None:
        keep = segments.same_doc(lag).reshape(*x.shape[:2], *([1] * (x.dim() - 2)))
        shifted = shifted * keep.to(x.dtype)
    return shifted
