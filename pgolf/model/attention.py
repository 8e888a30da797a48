"""Causal self-attention: GQA, QK-RMSNorm, (partial) RoPE and a learnable per-head query gain
(spec §4.1, §5.3), over a pluggable attention kernel (pgolf.model.attention_backends), with the
records' per-head output ops (pgolf.model.attention_outputs: XSA, SparseAttnGate) where configured."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pgolf.config import ModelConfig
from pgolf.model.attention_backends import SDPACausal
from pgolf.model.attention_outputs import ExclusiveSelfAttention, SparseAttnGate
from pgolf.model.layers import CastedLinear, Rotary, apply_rotary, rms_norm
from pgolf.model.roles import CONTROL, declare, matrix
from pgolf.model.segments import DocSegments


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, rope_base: float, qk_gain_init: float,
                 rope_dims: int = 0, backend=None, outputs: dict[str, nn.Module] | None = None):
        """`outputs`: ops `op(y, v, x) -> y` on the per-head output before the projection, in order
        (none: the plain attention, bit for bit)."""
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
        self.outputs = nn.ModuleDict(outputs or {})

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
        for op in self.outputs.values():
            y = op(y, v, x)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


def attention_outputs(cfg: ModelConfig, layer: int) -> dict[str, nn.Module]:
    """The output ops `cfg` puts on attention layer `layer`: XSA (model.attention.xsa), then the
    SparseAttnGate (model.attention.sparse_gate), as the record orders them (spec §5.3)."""
    a, ops = cfg.attention, {}
    if layer in a.xsa.indices(cfg.num_layers):
        ops["xsa"] = ExclusiveSelfAttention()
    if a.sparse_gate:
        ops["gate"] = SparseAttnGate(cfg.num_heads, a.sparse_gate_window, a.sparse_gate_scale)
    return ops


def build_attention(cfg: ModelConfig, layer: int, backend) -> CausalSelfAttention:
    a = cfg.attention
    return CausalSelfAttention(cfg.model_dim, cfg.num_heads, cfg.num_kv_heads, a.rope_base, a.qk_gain_init,
                               a.rope_dims, backend, attention_outputs(cfg, layer))
