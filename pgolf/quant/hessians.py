"""Input Hessians H = E[xᵀx] of every linear layer, for GPTQ (spec §5.11).

Forward hooks on the model's linear layers accumulate XᵀX of their inputs (fp32, per
weight), and the tied head's input (the final RMSNorm output) is credited to the
embedding it multiplies. Run calibration forwards under torch.no_grad(); average across
ranks with all_reduce() so every rank computes the same GPTQ codes.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pgolf.model.gpt import GPT
from pgolf.model.layers import CastedLinear


class HessianCollector:
    def __init__(self, model: GPT):
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}
        self._hooks = []
        for name, module in model.named_modules():
            if isinstance(module, CastedLinear) and module is not model.lm_head:
                self._hooks.append(module.register_forward_hook(self._hook(f"{name}.weight")))
        head = "tok_emb.weight" if model.lm_head is None else "lm_head.weight"
        self._hooks.append(model.head_input.register_forward_hook(self._hook(head)))

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
