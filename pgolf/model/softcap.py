"""The logit softcap before the softmax: the baseline's symmetric c·tanh(z/c) (spec §4.1, §5.7),
or the frontier's AsymLogit Rescale (frontier-spec F2, PR #1923), a module with two scalars.

Both are bounded monotone maps applied to every logit before the full softmax, so the
probabilities still sum to 1 (C2). The fused training losses (pgolf.ops.softcapped_ce) take
the scalar cap; that is exact for both forms as long as AsymLogit's scalars stay at the cap,
which they do (see AsymSoftcap).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pgolf.model.roles import CONTROL, declare


class Softcap(nn.Module):
    """c·tanh(z/c), c = model.logit_softcap."""

    def __init__(self, cap: float):
        super().__init__()
        self.cap = cap

    def forward(self, z: Tensor) -> Tensor:
        return self.cap * torch.tanh(z / self.cap)


class AsymSoftcap(Softcap):
    """AsymLogit Rescale: z' = s₊·tanh(z/s₊) for z ≥ 0 (#2135's side of the tie), s₋·tanh(z/s₋)
    otherwise, s₊ (`pos`) and s₋ (`neg`) scalar parameters initialised to the cap.

    As the records ran it, the scalars never move (F2's finding: no optimizer group holds them,
    the training and TTT losses use the scalar cap), so they are frozen here (requires_grad off:
    no gradient, no weight decay) and the map equals the symmetric cap exactly. They exist for
    the records' layout (35,945,671 + 2 = 35,945,673 parameters, two fp32 controls in the artifact).
    """

    def __init__(self, cap: float):
        super().__init__(cap)
        self.pos = nn.Parameter(torch.tensor(cap, dtype=torch.float32), requires_grad=False)
        self.neg = nn.Parameter(torch.tensor(cap, dtype=torch.float32), requires_grad=False)
        declare(self, pos=CONTROL, neg=CONTROL)

    def forward(self, z: Tensor) -> Tensor:
        pos, neg = self.pos.to(z.dtype), self.neg.to(z.dtype)
        return torch.where(z >= 0, pos * torch.tanh(z / pos), neg * torch.tanh(z / neg))


def build_softcap(cap: float, asymmetric: bool) -> Softcap:
    """The softcap model.asym_logit picks."""
    return AsymSoftcap(cap) if asymmetric else Softcap(cap)
