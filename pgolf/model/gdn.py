"""The GatedDeltaNet sequence mixer (spec §6.1; FLA's layer of the same name, mode "chunk").

    q, k, v = SiLU(causal_conv4(W·x)), q and k L2-normalised per head
    g = −exp(A_log)·softplus(a(x) + dt_bias),  β = σ(b(x))        (per head)
    o = gdn_chunk_scan(q, k, v, g, β)
    y = o_proj(RMSNorm(o)·w ⊙ SiLU(g_proj(x)))                    (gated norm per head)

K/V sharing: a layer built with `kv_source` runs that layer's k/v projections and convs
instead of its own. The shared module stays registered only in its owner, so parameters,
state_dict, optimizers and the artifact hold it once, and GPTQ's Hessian hook on it sees
the inputs of every layer that uses it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.model.layers import CastedLinear
from pgolf.model.roles import CONTROL, CONV, NORM, Role, declare, matrix
from pgolf.model.segments import DocSegments, shift_within
from pgolf.ops.fla_gdn import gdn_scan


class ShortConv(nn.Module):
    """Causal depthwise convolution (no bias) + SiLU over [B, T, D]; taps never reach across a
    row start or (with segments) a document start."""

    def __init__(self, dim: int, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, 1, size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv1d's default
        declare(self, weight=CONV)

    def forward(self, x: Tensor, segments: DocSegments | None = None) -> Tensor:
        w = self.weight.float()[:, 0]  # [D, size]; tap size−1 is the current token
        xf, size = x.float(), w.shape[1]  # accumulate in fp32, as fla's conv kernel does
        y = xf * w[:, size - 1]
        for lag in range(1, size):
            y = y + shift_within(xf, lag, segments) * w[:, size - 1 - lag]
        return F.silu(y).to(x.dtype)


def mixer_matrix(group: str, hot: bool = False) -> Role:
    """A GDN projection: its own layout group, attention's SDClip class (the sequence mixer's:
    no record tuned one for GDN, and it keeps the clip and QAT numbers GDN has always had)."""
    return matrix(group, clip="attn", hot=hot)


class KeyValue(nn.Module):
    def __init__(self, dim: int, inner: int, conv_size: int):
        super().__init__()
        self.k_proj = CastedLinear(dim, inner, role=mixer_matrix("gdn.k"))
        self.v_proj = CastedLinear(dim, inner, role=mixer_matrix("gdn.v"))
        self.k_conv, self.v_conv = ShortConv(inner, conv_size), ShortConv(inner, conv_size)

    def forward(self, x: Tensor, segments: DocSegments | None) -> tuple[Tensor, Tensor]:
        return self.k_conv(self.k_proj(x), segments), self.v_conv(self.v_proj(x), segments)


class GatedDeltaNet(nn.Module):
    def __init__(self, dim: int, num_heads: int, head_dim: int, conv_size: int = 4, chunk_size: int = 64,
                 kv_source: "GatedDeltaNet | None" = None, backend: str = "pgolf"):
        super().__init__()
        self.num_heads, self.head_dim, self.chunk_size = num_heads, head_dim, chunk_size
        self.scan = gdn_scan(backend)  # pgolf's kernels, or fla's (pgolf.ops.fla_gdn)
        inner = num_heads * head_dim
        self.q_proj = CastedLinear(dim, inner, role=mixer_matrix("gdn.q", hot=True))
        self.q_conv = ShortConv(inner, conv_size)
        if kv_source is None:
            self.kv = KeyValue(dim, inner, conv_size)
        else:
            object.__setattr__(self, "kv", kv_source.kv)  # shared, not registered (see the module doc)
        self.a_proj = CastedLinear(dim, num_heads, role=mixer_matrix("gdn.a"))
        self.b_proj = CastedLinear(dim, num_heads, role=mixer_matrix("gdn.b"))
        self.g_proj = CastedLinear(dim, inner, role=mixer_matrix("gdn.g"))
        self.o_proj = CastedLinear(inner, dim, role=mixer_matrix("gdn.o"))
        # FLA / Mamba-2 init: decay rates A in [1, 16], time steps log-uniform in [1e-3, 0.1]
        self.A_log = nn.Parameter(torch.empty(num_heads).uniform_(1, 16).log())
        dt = torch.exp(torch.rand(num_heads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp_min(1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)
        self.o_norm = nn.Parameter(torch.ones(head_dim))
        declare(self, A_log=CONTROL, dt_bias=CONTROL, o_norm=NORM)

    @property
    def shares_kv(self) -> bool:
        return "kv" not in self._modules

    def forward(self, x: Tensor, segments: DocSegments | None = None) -> Tensor:
        b, t, _ = x.shape
        heads = lambda y: y.reshape(b, t, self.num_heads, -1)
        q = F.normalize(heads(self.q_conv(self.q_proj(x), segments)).float(), dim=-1, eps=1e-6).to(x.dtype)
        k, v = self.kv(x, segments)
        k = F.normalize(heads(k).float(), dim=-1, eps=1e-6).to(x.dtype)
        g = -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + self.dt_bias.float())
        beta = torch.sigmoid(self.b_proj(x).float())
        if segments is None:
            o, _ = self.scan(q, k, heads(v), g, beta, chunk_size=self.chunk_size)
        else:  # the rows as one packed stream, restarting at every row and document start
            flat = lambda y: y.reshape(1, b * t, *y.shape[2:])
            o, _ = self.scan(flat(q), flat(k), flat(heads(v)), flat(g), flat(beta),
                             cu_seqlens=segments.cu_seqlens, chunk_size=self.chunk_size)
            o = o.reshape(b, t, self.num_heads, self.head_dim)
        o = F.rms_norm(o.float(), (self.head_dim,), eps=1e-5) * self.o_norm.float()
        o = o * F.silu(heads(self.g_proj(x)).float())
        return self.o_proj(o.to(x.dtype).reshape(b, t, -1))
