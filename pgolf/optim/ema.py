"""EMA of the weights (spec §5.10): an fp32 shadow of every parameter, from the init, updated
after every optimizer step, shadow <- decay·shadow + (1 − decay)·p; after training it replaces
the live weights, so Hessians, export and the final score all see the average (the records:
decay 0.9965).

Every rank holds the same replicated weights after a step, so every rank keeps the same shadow
and no communication is needed. The shadow is part of a checkpoint (`state_dict`), so a resumed
run averages exactly as an uninterrupted one.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pgolf.errors import PgolfError


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self._params = dict(model.named_parameters())
        self.shadow = {name: p.detach().float().clone() for name, p in self._params.items()}

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average, after the optimizer step (fp32; a bf16 parameter is upcast)."""
        shadows = list(self.shadow.values())
        torch._foreach_lerp_(shadows, [p.detach().float() for p in self._params.values()], 1.0 - self.decay)

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Replace the live weights by the average, in each parameter's own dtype."""
        for name, p in self._params.items():
            p.copy_(self.shadow[name])

    def state_dict(self) -> dict[str, Tensor]:
        return {name: t.clone() for name, t in self.shadow.items()}

    def load_state_dict(self, state: dict[str, Tensor], source: str) -> None:
        """Load a checkpoint's shadow: the same names and shapes as the model's parameters."""
        want = {name: tuple(t.shape) for name, t in self.shadow.items()}
        got = {name: tuple(t.shape) for name, t in state.items()} if isinstance(state, dict) else None
        if got != want:
            raise PgolfError(f"{source}: field 'ema' does not fit this model's parameters")
        for name, t in self.shadow.items():
            t.copy_(state[name])
