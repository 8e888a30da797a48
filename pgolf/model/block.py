"""A pre-norm block with the baseline's residual mixing (spec §4.1)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pgolf.model.layers import rms_norm
from pgolf.model.roles import CONTROL, declare
from pgolf.model.segments import DocSegments


class Block(nn.Module):
    """x_in = mix0*x + mix1*x0; x = x_in + attn_scale*mixer(s*norm(x_in)); x += mlp_scale*mlp(s*norm(x)).

    `mixer` is any sequence mixer (x [B, T, D], segments) -> [B, T, D] (attention, GatedDeltaNet),
    `mlp` any [B, T, D] -> [B, T, D] module, so variants plug in unchanged. The block reads and
    returns the residual lanes (a tuple; this wiring has one); s is the slot's norm scale.
    """

    def __init__(self, dim: int, mixer: nn.Module, mlp: nn.Module):
        super().__init__()
        self.mixer, self.mlp = mixer, mlp
        self.attn_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))).float())
        declare(self, attn_scale=CONTROL, mlp_scale=CONTROL, resid_mix=CONTROL)

    def forward(self, lanes: tuple[Tensor, ...], x0: Tensor, segments: DocSegments | None = None,
                norm_scale: float = 1.0) -> tuple[Tensor]:
        (x,) = lanes
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.mixer(rms_norm(x) * norm_scale, segments)
        return (x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x) * norm_scale),)
