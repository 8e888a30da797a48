"""Attention kernels behind one signature, chosen by config and availability.

    backend(q [B, H, T, hd], k, v [B, Hkv, T, hd], mask) -> [B, H, T, hd]

where `mask` is what `backend.prepare(segments)` made once per forward from the batch's
documents (DocSegments), shared by every attention layer:

- SDPACausal: plain causal attention, no documents (flash inside SDPA on GPU). mask: None.
- FlexDocument: FlexAttention with a document-causal BlockMask (query i sees key j iff j <= i
  in the same document): only the blocks the documents touch are computed, no [T, T] mask.
  CUDA: the compiled (fused) kernel. CPU: torch's unfused forward; torch 2.13 has no
  FlexAttention backward on CPU, so training document-isolated attention needs a GPU.
- FlashVarlen: flash-attn's varlen kernel over the rows flattened into one packed stream
  cut at `cu_seqlens` (every document and row start), where flash_attn is installed (CUDA,
  bf16/fp16).

The dense-mask SDPA version is kept only as the tests' reference (tests/attention_reference.py).
"""
from __future__ import annotations

import functools
import importlib.util

import torch
import torch.nn.functional as F
from torch import Tensor

from pgolf.errors import PgolfError
from pgolf.model.segments import DocSegments


class SDPACausal:
    name = "sdpa"

    def prepare(self, segments: DocSegments) -> None:
        return None

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, mask: None) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=k.size(1) != q.size(1))


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


class FlexDocument:
    name = "flex"

    def prepare(self, segments: DocSegments):
        from torch.nn.attention.flex_attention import create_block_mask

        doc = segments.doc_id
        b, t = doc.shape

        def document_causal(batch, head, q_idx, kv_idx):
            return (q_idx >= kv_idx) & (doc[batch, q_idx] == doc[batch, kv_idx])

        # On CUDA the mask is built blockwise by a compiled kernel (no [T, T] intermediate).
        return create_block_mask(document_causal, b, None, t, t, device=doc.device, _compile=doc.is_cuda)

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, mask) -> Tensor:
        from torch.nn.attention.flex_attention import flex_attention

        if not q.is_cuda and q.requires_grad and torch.is_grad_enabled():
            raise PgolfError("model.attention.backend=flex: torch has no FlexAttention backward on CPU; train "
                             "document-isolated attention on a GPU (CPU runs forward only)")
        kernel = _compiled_flex() if q.is_cuda else flex_attention  # eager flex on CUDA is the unfused math
        return kernel(q, k, v, block_mask=mask, enable_gqa=k.size(1) != q.size(1))


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


class FlashVarlen:
    name = "flash"

    def prepare(self, segments: DocSegments) -> tuple[Tensor, int]:
        # No segment is longer than a row, so the row length bounds max_seqlen without a host sync; the
        # packing loader knows a tighter bound (its split length), which keeps the kernel's grid small.
        return segments.cu_seqlens.to(torch.int32), segments.max_len or segments.doc_id.shape[1]

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, mask: tuple[Tensor, int]) -> Tensor:
        from flash_attn import flash_attn_varlen_func

        cu_seqlens, max_len = mask
        b, h, t, hd = q.shape
        packed = lambda y: y.transpose(1, 2).reshape(b * t, y.size(1), hd)  # [B*T, heads, hd], rows in order
        y = flash_attn_varlen_func(packed(q), packed(k), packed(v), cu_seqlens, cu_seqlens, max_len, max_len,
                                   causal=True)
        return y.view(b, t, h, hd).transpose(1, 2)


BACKENDS = {"sdpa": SDPACausal, "flex": FlexDocument, "flash": FlashVarlen}


def choose_backend(name: str, doc_isolation: bool):
    """The backend for `model.attention.backend` (validated by pgolf.config): auto is sdpa
    without document isolation, else flash-attn varlen where installed with CUDA, else flex."""
    if name == "auto":
        name = ("flash" if flash_attn_available() and torch.cuda.is_available() else "flex") if doc_isolation \
            else "sdpa"
    if name == "flash" and not flash_attn_available():
        raise PgolfError("model.attention.backend=flash: the flash_attn package is not installed")
    return BACKENDS[name]()
