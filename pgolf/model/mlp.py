"""The squared-activation MLPs: relu² (modded-nanogpt lineage, the baseline) and
LeakyReLU(0.5)² (PR #493, the records since), eager or through the fused op.

All share one parameter layout (fc [mult·dim, dim], proj [dim, mult·dim], zero-init), so
checkpoints and artifacts do not depend on the implementation that trained them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.model.layers import CastedLinear
from pgolf.model.roles import matrix

ACTIVATIONS = {"relu2": 0.0, "leaky_relu2": 0.5}  # name -> negative slope (relu² is slope 0)
IMPLS = ("eager", "fused")


class ReluSquaredMLP(nn.Module):
    negative_slope = 0.0

    def __init__(self, dim: int, mult: int):
        super().__init__()
        self.fc = CastedLinear(dim, mult * dim, role=matrix("mlp.fc", clip="mlp", hot=True))
        self.proj = CastedLinear(mult * dim, dim, zero_init=True, role=matrix("mlp.proj", clip="mlp"))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(torch.relu(self.fc(x)).square())


class LeakyReluSquaredMLP(ReluSquaredMLP):
    """proj(leaky_relu(fc(x), 0.5)²), spec §5.4."""

    negative_slope = 0.5

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.leaky_relu(self.fc(x), self.negative_slope).square())


class FusedSquaredMLP(LeakyReluSquaredMLP):
    """The same function through `pgolf::leaky_relu2_mlp` (Triton on CUDA, torch elsewhere),
    where a gradient is wanted: the training forward.

    Without a gradient (eval, and GPTQ's calibration, whose Hessian hooks sit on fc and
    proj) the eager form runs, as in the record. So it does while QAT is on
    (CastedLinear.qat_clip_sigmas): that forward must see int6 weights, which the op does
    not model; torch.compile guards on both, so switching recompiles. A custom op gets no
    autocast, so the input is cast to the autocast dtype here, as F.linear would.
    """

    def __init__(self, dim: int, mult: int, negative_slope: float):
        super().__init__(dim, mult)
        self.negative_slope = negative_slope

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_grad_enabled() or self.fc.qat_clip_sigmas is not None or self.proj.qat_clip_sigmas is not None:
            return super().forward(x)
        if torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))
        from pgolf.ops.leaky_relu2_mlp import leaky_relu_squared_mlp  # mlp_impl "fused" only (trace.OPTIONAL)

        return leaky_relu_squared_mlp(x, self.fc.weight, self.proj.weight, self.negative_slope)


def build_mlp(dim: int, mult: int, activation: str = "relu2", impl: str = "eager") -> ReluSquaredMLP:
    """The MLP of `activation` (model.mlp_activation) run by `impl` (train.mlp_impl)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"mlp activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    if impl not in IMPLS:
        raise ValueError(f"mlp impl must be one of {list(IMPLS)}, got {impl!r}")
    if impl == "fused":
        return FusedSquaredMLP(dim, mult, ACTIVATIONS[activation])
    return LeakyReluSquaredMLP(dim, mult) if activation == "leaky_relu2" else ReluSquaredMLP(dim, mult)
