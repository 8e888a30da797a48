"""Where documents start inside a batch of token rows, for models that must not mix them.

Rows are [B, T] slices of a BOS-separated stream. With document isolation every mixer
restarts at each BOS and at each row start: the recurrent state (through cu_seqlens over
the flattened rows), the short convolutions and SmearGate (same_doc masks), the n-gram
hashes and attention (the attention backend's document mask, built once per forward).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class DocSegments:
    doc_id: Tensor  # [B, T] int64: documents counted from each row's start
    cu_seqlens: Tensor  # [S + 1] int64: segment starts in the flattened B*T tokens, then B*T
    attention: Any = None  # the attention backend's form of the documents (a BlockMask, cu_seqlens), if any
    max_len: int = 0  # the longest segment, where the caller knows it (the packing loader's seq_len); 0: unknown

    @staticmethod
    def from_tokens(input_ids: Tensor, bos_id: int) -> "DocSegments":
        is_bos = input_ids == bos_id
        starts = is_bos.clone()
        starts[:, 0] = True
        flat = starts.reshape(-1).nonzero().squeeze(1)
        total = torch.tensor([input_ids.numel()], device=input_ids.device, dtype=flat.dtype)
        return DocSegments(torch.cumsum(is_bos.long(), dim=1), torch.cat([flat, total]))

    @staticmethod
    def from_cu_seqlens(cu_seqlens: Tensor, total: int, max_len: int = 0) -> "DocSegments":
        """The segments of one packed row of `total` tokens, given as the packing loader gives them:
        segment starts, then `total`, padded with `total` to a static length (pgolf.data.packing).
        The padding makes empty segments past the end, which no position falls in."""
        cu = cu_seqlens.long()
        doc_id = torch.searchsorted(cu, torch.arange(total, device=cu.device), right=True) - 1
        return DocSegments(doc_id[None], cu, max_len=max_len)

    def with_attention(self, attention: Any) -> "DocSegments":
        return replace(self, attention=attention)

    def same_doc(self, lag: int) -> Tensor:
        """[B, T] bool: position t − lag exists in the row and is in t's document."""
        out = torch.zeros_like(self.doc_id, dtype=torch.bool)
        out[:, lag:] = self.doc_id[:, lag:] == self.doc_id[:, :-lag]
        return out


def shift_within(x: Tensor, lag: int, segments: DocSegments | None) -> Tensor:
    """x_{t−lag} along dim 1 ([B, T, ...]), zero where it is before the row or (with segments) in another document."""
    shifted = torch.zeros_like(x)
    shifted[:, lag:] = x[:, :-lag]
    if segments is not None:
        keep = segments.same_doc(lag).reshape(*x.shape[:2], *([1] * (x.dim() - 2)))
        shifted = shifted * keep.to(x.dtype)
    return shifted
