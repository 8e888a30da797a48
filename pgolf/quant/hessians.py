"""Input Hessians H = E[xᵀx] of every linear layer, for GPTQ (spec §5.11).

Which weights get one, and from which input, is their role's `hessian`: a matrix's from
its own linear layer's input, the head's (or the embedding tied to it) from the model's
head input (the final RMSNorm output). Forward hooks accumulate XᵀX (fp32, per weight). Run calibration forwards under torch.no_grad(); average across
ranks with all_reduce() so every rank computes the same GPTQ codes.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pgolf.model.gpt import GPT
from pgolf.model.roles import RoleError, roles_by_module


class HessianCollector:
    def __init__(self, model: GPT):
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}
        self._hooks = []
        heads = []
        for path, module, attr, role in roles_by_module(model):
            name = f"{path}.{attr}" if path else attr
            if role.hessian == "input":
                self._hooks.append(module.register_forward_hook(self._hook(name)))
            elif role.hessian == "head":
                heads.append(name)
        if len(heads) > 1:
            raise RoleError(f"two parameters claim the head's input: {', '.join(heads)}")
        for name in heads:
            self._hooks.append(model.head_input.register_forward_hook(self._hook(name)))

    def _hook(self, weight_name: str):
        def hook(module: nn.Module, inputs, output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
            if weight_name not in self.sums:
                self.sums[weight_name] = torch.zeros(x.shape[1], x.shape[1], device=x.device)
                self.counts[weight_name] = 0
            self.sums[weight_name].addmm_(x.T, x)
            self.counts[weight_name] += x.shape[0]
        return hook

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def hessians(self) -> dict[str, Tensor]:
        """Mean XᵀX per weight, averaged over ranks when distributed (a collective)."""
        out = {}
        for name in sorted(self.sums):
            h = self.sums[name] / max(self.counts[name], 1)
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(h, op=dist.ReduceOp.SUM)
                h /= dist.get_world_size()
            out[name] = h
        return out
