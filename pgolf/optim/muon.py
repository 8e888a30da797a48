"""Muon: momentum SGD whose update is orthogonalised by Newton-Schulz (spec §4.2).

Nesterov momentum, then newton_schulz, then the shape scale sqrt(max(1, rows/cols)).
Across ranks the work is split round-robin: rank r orthogonalises parameters i with
i % world == r, and one all-reduce (sum) of a flat bf16 buffer gives every rank every
update. Gradients must already be identical on all ranks (DDP has averaged them).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from pgolf.optim.newton_schulz import newton_schulz


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float, backend_steps: int = 5, nesterov: bool = True,
                 orthogonalize=newton_schulz):
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps, nesterov=nesterov))
        self.orthogonalize = orthogonalize  # e.g. torch.compile(newton_schulz)

    def gathered_state_dict(self) -> dict:
        """state_dict() with every matrix's momentum, not just this rank's share.

        A collective when distributed: a buffer is current only on the rank that owns its
        matrix (any other copy, e.g. loaded from a checkpoint, goes stale), so each entry
        is all-reduced from its owner alone before one rank writes the checkpoint.
        """
        sd = self.state_dict()
        if not (dist.is_available() and dist.is_initialized()):
            return sd
        world, rank = dist.get_world_size(), dist.get_rank()
        state, index = {}, 0
        for group in self.param_groups:
            for i, p in enumerate(group["params"]):
                buf = self.state.get(p, {}).get("momentum_buffer")
                full = buf.clone() if (buf is not None and i % world == rank) else torch.zeros_like(p)
                dist.all_reduce(full, op=dist.ReduceOp.SUM)
                state[index] = {"momentum_buffer": full}
                index += 1
        sd["state"] = state
        return sd

    @torch.no_grad()
    def step(self, closure=None):
        distributed = dist.is_available() and dist.is_initialized()
        world = dist.get_world_size() if distributed else 1
        rank = dist.get_rank() if distributed else 0
        for group in self.param_groups:
            params = group["params"]
            if not params:
                continue
            flat = torch.zeros(sum(p.numel() for p in params), device=params[0].device, dtype=torch.bfloat16)
            offset = 0
            for i, p in enumerate(params):
                if i % world == rank and p.grad is not None:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p.grad)
                    buf = state["momentum_buffer"]
                    buf.mul_(group["momentum"]).add_(p.grad)
                    g = p.grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                    g = self.orthogonalize(g, steps=group["backend_steps"])
                    g = g * max(1.0, g.size(0) / g.size(1)) ** 0.5
                    flat[offset:offset + p.numel()] = g.reshape(-1)
                offset += p.numel()
            if distributed:
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            offset = 0
            for p in params:
                p.add_(flat[offset:offset + p.numel()].view_as(p).to(p.dtype), alpha=-group["lr"])
                offset += p.numel()
        return None
