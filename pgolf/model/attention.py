"""Causal self-attention: GQA, QK-RMSNorm, (partial) RoPE and a learnable per-head query gain
(spec §4.1, §5.3), over a pluggable attention kernel (pgolf.model.attention_backends)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pgolf.model.attention_backends import SDPACausal
from pgolf.model.layers import CastedLinear, Rotary, apply_rotary, rms_norm
from pgolf.model.roles import CONTROL, declare, matrix
from pgolf.model.segments import DocSegments


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, rope_base: float, qk_gain_init: float,
                 rope_dims: int = 0, backend=None):
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        kv_dim = num_kv_heads * self.head_dim
        self.c_q = CastedLinear(dim, dim, role=matrix("attn.c_q", clip="attn", hot=True))
        self.c_k = CastedLinear(dim, kv_dim, role=matrix("attn.c_k", clip="attn"))
        self.c_v = CastedLinear(dim, kv_dim, role=matrix("attn.c_v", clip="attn"))
        self.proj = CastedLinear(dim, dim, zero_init=True,  # each block starts as the identity
                                 role=matrix("attn.proj", clip="attn"))
        self.q_gain = nn.Parameter(torch.full((num_heads,), qk_gain_init, dtype=torch.float32))
        declare(self, q_gain=CONTROL)
        self.rotary = Rotary(self.head_dim, rope_base, rope_dims)
        self.backend = backend or SDPACausal()

    def forward(self, x: Tensor, segments: DocSegments | None = None) -> Tensor:
        b, t, d = x.shape
        q = self.c_q(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # [B, H, T, hd]
        k = self.c_k(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, T, hd]
        v = self.c_v(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = rms_norm(q), rms_norm(k)
        cos, sin = self.rotary(t, x.device, q.dtype)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q = q * self.q_gain.to(q.dtype)[None, :, None, None]
        y = self.backend(q, k, v, None if segments is None else segments.attention)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))
