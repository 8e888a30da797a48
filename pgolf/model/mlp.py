"""The relu² MLP (modded-nanogpt lineage)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pgolf.model.layers import CastedLinear
from pgolf.model.roles import matrix


class ReluSquaredMLP(nn.Module):
    def __init__(self, dim: int, mult: int):
        super().__init__()
        self.fc = CastedLinear(dim, mult * dim, role=matrix("mlp.fc", clip="mlp", hot=True))
        self.proj = CastedLinear(mult * dim, dim, zero_init=True, role=matrix("mlp.proj", clip="mlp"))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(torch.relu(self.fc(x)).square())
