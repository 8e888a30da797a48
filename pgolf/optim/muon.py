"""Muon: momentum whose update is orthogonalised by Newton-Schulz (spec §4.2, §5.8).

Parameters are matrices [rows, cols] or banks [k, rows, cols]; matrices of one shape are
stacked into a bank, so one batched `pgolf::newton_schulz` call serves all of them. Per
bank and step, with g the gradient averaged over ranks:

    buf = μ·buf + g;   u = g + μ·buf (Nesterov) or buf
    u = u / ‖row‖                      (MuonEq-R, `row_normalize`)
    u = newton_schulz(u) · sqrt(max(1, rows/cols))
    p = p·(1 − lr·wd) − lr·u           (decoupled weight decay)

Across ranks a bank's leading dimension is padded to a multiple of the world size and cut
into equal contiguous shards: each rank keeps momentum for, and orthogonalises, its shard
only; an all-gather then gives every rank every update. Banks run largest first, and each
bank's all-gather overlaps the next bank's Newton-Schulz.

Gradients arrive one of two ways:
- replicated (default): DDP has already averaged every gradient; each rank slices its shard.
- sharded: the matrices are kept out of DDP; right after backward, launch_reduce_scatters()
  starts one asynchronous reduce-scatter (average) per bank, which runs while the other
  optimizers step; step() waits for each in turn. Half the gradient traffic of an all-reduce.
On one process both are the same computation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from pgolf.ops.newton_schulz import newton_schulz


@dataclass
class _Bank:
    group: int  # index into param_groups (load_state_dict replaces the group dicts)
    params: list[torch.nn.Parameter]  # one 3-D bank, or 2-D matrices of one shape
    k: int  # matrices in the bank
    shape: tuple[int, int]

    def grads(self, lo: int, hi: int) -> Tensor:
        """Gradients of matrices [lo, hi) as [hi - lo, rows, cols] fp32 (zeros for missing ones)."""
        if len(self.params) == 1 and self.params[0].ndim == 3:
            g = self.params[0].grad
            return (g[lo:hi] if g is not None else torch.zeros(hi - lo, *self.shape, device=self.params[0].device)).float()
        if hi <= lo:
            return torch.zeros(0, *self.shape, device=self.params[0].device)
        return torch.stack([p.grad.float() if p.grad is not None else torch.zeros(self.shape, device=p.device)
                            for p in self.params[lo:hi]])

    def apply(self, update: Tensor, lr: float, wd: float) -> None:
        """p = p·(1 − lr·wd) − lr·update, for the bank's k matrices (update: [>= k, rows, cols])."""
        if len(self.params) == 1 and self.params[0].ndim == 3:
            pairs = [(self.params[0], update[: self.k])]
        else:
            pairs = list(zip(self.params, update))
        for p, u in pairs:
            if wd:
                p.mul_(1.0 - lr * wd)
            p.add_(u.to(p.dtype), alpha=-lr)


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float, backend_steps: int = 5, nesterov: bool = True,
                 coefficients: str = "classic", norm_scale: float = 1.0, row_normalize: bool = False,
                 weight_decay: float = 0.0, sharded: bool = False):
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps, nesterov=nesterov,
                                      coefficients=coefficients, norm_scale=norm_scale, row_normalize=row_normalize,
                                      weight_decay=weight_decay))
        self.sharded = sharded
        self._banks = self._make_banks()
        self._pending_grads: dict[int, tuple] = {}

    def _make_banks(self) -> list[_Bank]:
        banks = []
        for gi, group in enumerate(self.param_groups):
            by_shape: dict[tuple, list] = {}
            for p in group["params"]:
                if p.ndim == 3:
                    banks.append(_Bank(gi, [p], p.shape[0], tuple(p.shape[1:])))
                elif p.ndim == 2:
                    by_shape.setdefault(tuple(p.shape), []).append(p)
                else:
                    raise ValueError(f"Muon takes matrices or banks of them, got a parameter of shape {tuple(p.shape)}")
            banks += [_Bank(gi, ps, len(ps), shape) for shape, ps in by_shape.items()]
        return sorted(banks, key=lambda b: -b.k * b.shape[0] * b.shape[1])

    @staticmethod
    def _world() -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def _shard(self, bank: _Bank) -> tuple[int, int, int]:
        """(per-rank size, first, end) of this rank's share of the bank."""
        world, rank = self._world()
        size = math.ceil(bank.k / world)
        lo = min(rank * size, bank.k)
        return size, lo, min(lo + size, bank.k)

    def launch_reduce_scatters(self) -> None:
        """Sharded mode: start averaging each bank's gradients into this rank's shard."""
        world, _ = self._world()
        if not self.sharded or world == 1:
            return
        for i, bank in enumerate(self._banks):
            size, _, _ = self._shard(bank)
            full = torch.zeros(size * world, *bank.shape, device=bank.params[0].device)
            full[: bank.k] = bank.grads(0, bank.k)
            out = torch.empty(size, *bank.shape, device=full.device)
            self._pending_grads[i] = (out, dist.reduce_scatter_tensor(out, full, op=dist.ReduceOp.AVG, async_op=True))

    def reduced_grads(self) -> list[Tensor] | None:
        """Sharded mode across ranks: this rank's averaged gradient shards, once the reduce-scatters
        are done (padding rows are zero, every matrix lies in exactly one rank's shard); None
        otherwise. Gradient clipping scales these in place."""
        if not self._pending_grads:
            return None
        for out, handle in self._pending_grads.values():
            if handle is not None:
                handle.wait()
        self._pending_grads = {i: (out, None) for i, (out, _) in self._pending_grads.items()}
        return [out for out, _ in self._pending_grads.values()]

    def _grad_shard(self, i: int, bank: _Bank) -> Tensor:
        size, lo, hi = self._shard(bank)
        if i in self._pending_grads:
            out, handle = self._pending_grads.pop(i)
            if handle is not None:
                handle.wait()
            return out
        if self.sharded and self._world()[0] > 1:
            raise RuntimeError("sharded Muon: call launch_reduce_scatters() after backward, before step()")
        g = bank.grads(lo, hi)
        return torch.cat([g, g.new_zeros(size - g.shape[0], *bank.shape)]) if g.shape[0] < size else g

    def _momentum(self, bank: _Bank, size: int, lo: int, like: Tensor) -> Tensor:
        state = self.state[bank.params[0]]
        if "momentum_full" in state:  # loaded from a checkpoint: take this rank's slice
            full = state.pop("momentum_full").to(like)
            shard = like.new_zeros(size, *bank.shape)
            part = full[lo:lo + size]
            shard[: part.shape[0]] = part
            state["momentum"] = shard
        if "momentum" not in state:
            state["momentum"] = like.new_zeros(size, *bank.shape)
        return state["momentum"]

    @torch.no_grad()
    def step(self, closure=None):
        world, _ = self._world()
        previous = None
        for i, bank in enumerate(self._banks):
            group = self.param_groups[bank.group]
            size, lo, _ = self._shard(bank)
            g = self._grad_shard(i, bank)
            buf = self._momentum(bank, size, lo, g)
            buf.mul_(group["momentum"]).add_(g)
            u = g.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
            if group["row_normalize"]:
                u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-7)
            u = newton_schulz(u, group["backend_steps"], group["coefficients"], group["norm_scale"])
            u = u * max(1.0, bank.shape[0] / bank.shape[1]) ** 0.5
            if world > 1:
                full = torch.empty(size * world, *bank.shape, device=u.device, dtype=u.dtype)
                handle = dist.all_gather_into_tensor(full, u.contiguous(), async_op=True)
            else:
                full, handle = u, None
            if previous is not None:
                self._finish(*previous)
            previous = (bank, full, handle, group)
        if previous is not None:
            self._finish(*previous)
        return None

    @staticmethod
    def _finish(bank: _Bank, full: Tensor, handle, group: dict) -> None:
        if handle is not None:
            handle.wait()
        bank.apply(full, group["lr"], group["weight_decay"])

    def gathered_state_dict(self) -> dict:
        """state_dict() holding every bank's whole momentum, independent of the world size.

        A collective when distributed: each rank holds only its shard's momentum.
        """
        sd = self.state_dict()
        world, _ = self._world()
        index_of = {id(p): j for j, p in enumerate(p for g in self.param_groups for p in g["params"])}
        for bank in self._banks:
            state = self.state.get(bank.params[0], {})
            if "momentum_full" in state:
                full = state["momentum_full"]
            elif "momentum" in state:
                shard = state["momentum"]
                gathered = torch.empty(shard.shape[0] * world, *bank.shape, device=shard.device, dtype=shard.dtype)
                if world > 1:
                    dist.all_gather_into_tensor(gathered, shard.contiguous())
                else:
                    gathered = shard
                full = gathered[: bank.k].clone()
            else:
                continue
            sd["state"][index_of[id(bank.params[0])]] = {"momentum_full": full}
        return sd
