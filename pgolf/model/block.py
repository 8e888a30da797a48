"""A pre-norm transformer block with the baseline's residual mixing (spec §4.1)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pgolf.model.layers import rms_norm
from pgolf.model.roles import CONTROL, declare
from pgolf.model.segments import DocSegments


class Block(nn.Module):
    """x_in = mix0*x + mix1*x0; x = x_in + attn_scale*attn(norm(x_in)); x += mlp_scale*mlp(norm(x)).

    `attn` is any sequence mixer (x [B, T, D], segments) -> [B, T, D] (attention, GatedDeltaNet),
    `mlp` any [B, T, D] -> [B, T, D] module, so variants plug in unchanged.
    """

    def __init__(self, dim: int, attn: nn.Module, mlp: nn.Module):
        super().__init__()
        self.attn, self.mlp = attn, mlp
        self.attn_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))).float())
        declare(self, attn_scale=CONTROL, mlp_scale=CONTROL, resid_mix=CONTROL)

    def forward(self, x: Tensor, x0: Tensor, segments: DocSegments | None = None) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms_norm(x), segments)
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x))
