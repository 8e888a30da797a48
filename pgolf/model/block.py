"""Pre-norm blocks: the baseline's residual mixing (spec §4.1) and the records' two parallel lanes (spec §5.5)."""
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


class LaneLambdas(nn.Module):
    """The parallel lanes' mixing weights of every physical layer, one tensor each, as the record
    stores them (spec §5.2: parallel_resid_lambdas [L, 2], init 1.1; parallel_post_lambdas
    [L, 2, 2] = [layer, sublayer, lane], init 1). Only the rows of the layers that run on two
    lanes are read; the others exist because the record's layout (35,945,671 parameters) has
    them. The model owns this module; each ParallelBlock reads its own row."""

    def __init__(self, num_layers: int):
        super().__init__()
        self.resid_lambdas = nn.Parameter(torch.full((num_layers, 2), 1.1, dtype=torch.float32))
        self.post_lambdas = nn.Parameter(torch.ones(num_layers, 2, 2, dtype=torch.float32))
        declare(self, resid_lambdas=CONTROL, post_lambdas=CONTROL)


class ParallelBlock(Block):
    """The records' parallel residuals (spec §5.5) on two lanes: attention reads
    resid_mix(lane0, x0), the MLP reads lane1 (no mix, so it does not see this layer's attention):
        a = attn_scale*mixer(s*norm(mix0*lane0 + mix1*x0)),  m = mlp_scale*mlp(s*norm(lane1))
        lane0 <- r0*lane0 + P[0,0]*a + P[1,0]*m,  lane1 <- r1*lane1 + P[0,1]*a + P[1,1]*m
    r (resid_lambdas) init 1.1, P (post_lambdas, [sublayer, lane]) init 1: row `layer` of the
    model's LaneLambdas. With zero output projections both lanes start as 1.1·(their input),
    which the final RMSNorm undoes."""

    def __init__(self, dim: int, mixer: nn.Module, mlp: nn.Module, lambdas: LaneLambdas, layer: int):
        super().__init__(dim, mixer, mlp)
        # Held in a tuple so nn.Module does not register it here too: the model owns it (one
        # state-dict entry per tensor); .to(), deepcopy of the model and assign-loads keep this link.
        self._lambdas, self.layer = (lambdas,), layer

    @property
    def resid_lambdas(self) -> Tensor:
        return self._lambdas[0].resid_lambdas[self.layer]

    @property
    def post_lambdas(self) -> Tensor:
        return self._lambdas[0].post_lambdas[self.layer]

    def forward(self, lanes: tuple[Tensor, ...], x0: Tensor, segments: DocSegments | None = None,
                norm_scale: float = 1.0) -> tuple[Tensor, Tensor]:
        lane0, lane1 = lanes
        dt = lane0.dtype
        mix, r, p = self.resid_mix.to(dt), self.resid_lambdas.to(dt), self.post_lambdas.to(dt)
        a = self.attn_scale.to(dt) * self.mixer(rms_norm(mix[0] * lane0 + mix[1] * x0) * norm_scale, segments)
        m = self.mlp_scale.to(dt) * self.mlp(rms_norm(lane1) * norm_scale)
        return r[0] * lane0 + p[0, 0] * a + p[1, 0] * m, r[1] * lane1 + p[0, 1] * a + p[1, 1] * m
