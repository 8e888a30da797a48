"""What the records do to the attention output per head, between the kernel and the output
projection (spec §5.3 items 6-7). Each is a module `op(y, v, x) -> y` on

    y [B, H, T, hd]  the attention kernel's output (any strides: flash's is a transposed view)
    v [B, Hkv, T, hd] the values the kernel read, x [B, T, D] the attention's (normed) input

and `CausalSelfAttention` applies those it was built with, in order (XSA, then the gate).
Both act on each token alone, so neither lets anything cross positions or documents.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.model.roles import GATE, declare


class ExclusiveSelfAttention(nn.Module):
    """XSA (PRs #265/#478): y_h <- y_h − (y_h·v̂)v̂, v̂ the token's own value of h's KV group at
    unit length, so a head's output keeps nothing along the token's own value. Parameter-free.
    Query head h reads KV head h // (H / Hkv), as SDPA's enable_gqa and flash's GQA do."""

    def forward(self, y: Tensor, v: Tensor, x: Tensor) -> Tensor:
        grouped = y.unflatten(1, (v.size(1), -1))  # [B, Hkv, G, T, hd]
        v_hat = F.normalize(v, dim=-1).unsqueeze(2)  # [B, Hkv, 1, T, hd]
        along = (grouped * v_hat).sum(dim=-1, keepdim=True) * v_hat
        return (grouped - along).flatten(1, 2)


class SparseAttnGate(nn.Module):
    """SparseAttnGate (PR #1787): y_h <- σ(scale · W_h · x[:window]) · y_h, W [H, window] zero-init,
    so every head starts at half its output (attn_scale compensates in training). The record:
    window 12, scale 0.5. W is a gate matrix (role GATE: scalar Adam, int8 row-max in the artifact)."""

    def __init__(self, num_heads: int, window: int = 12, scale: float = 1.0):
        super().__init__()
        self.window, self.scale = window, scale
        self.weight = nn.Parameter(torch.zeros(num_heads, window, dtype=torch.float32))
        declare(self, weight=GATE)

    def forward(self, y: Tensor, v: Tensor, x: Tensor) -> Tensor:
        g = torch.sigmoid(self.scale * F.linear(x[..., : self.window], self.weight.to(x.dtype)))  # [B, T, H]
        return y * g.transpose(1, 2).unsqueeze(-1).to(y.dtype)
