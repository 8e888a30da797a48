"""The eager references of the ops: each op's definition in plain differentiable torch, at fp64 by
default, the truth its kernel and its CPU path are tested against (tests, benchmarks). No run calls
them, so they live apart from the ops (a packed script carries none).

An op whose CPU path is its reference keeps it (pgolf.ops.int6_matmul).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pgolf.ops.gdn import seq_bounds
from pgolf.ops.newton_schulz import normalized_input


def reference_softcapped_ce(logits: Tensor, targets: Tensor, weights: Tensor | None = None, softcap: float = 30.0,
                            ignore_index: int = -100, reduction: str = "mean", dtype=torch.float64) -> Tensor:
    """The definition, in plain differentiable torch at `dtype`."""
    z = softcap * torch.tanh(logits.to(dtype) / softcap)
    valid = targets != ignore_index
    z_t = z.gather(1, torch.where(valid, targets, 0)[:, None])[:, 0]
    rows = torch.where(valid, torch.logsumexp(z, dim=1) - z_t, 0)
    w = valid.to(dtype) if weights is None else weights.to(dtype) * valid
    if reduction == "none":
        return rows * w
    if reduction == "sum":
        return (rows * w).sum()
    return (rows * w).sum() / w.sum()


def reference_leaky_relu2_mlp(x: Tensor, w_up: Tensor, w_down: Tensor, negative_slope: float = 0.5,
                              dtype=torch.float64) -> Tensor:
    """The definition, in plain differentiable torch at `dtype`."""
    pre = x.to(dtype) @ w_up.to(dtype).T
    return F.leaky_relu(pre, negative_slope).square() @ w_down.to(dtype).T


def newton_schulz_reference(x: Tensor, coefficients, norm_scale: float = 1.0, eps: float = 1e-7,
                            dtype: torch.dtype = torch.float64) -> Tensor:
    """The iteration in plain torch at `dtype` (fp64: the truth the op is tested against)."""
    x3 = x.reshape(-1, *x.shape[-2:])
    tall = x3.shape[-2] > x3.shape[-1]
    y = normalized_input(x3.mT if tall else x3, norm_scale, eps, dtype)
    for a, b, c in coefficients:
        gram = y @ y.mT
        y = a * y + (b * gram + c * gram @ gram) @ y
    return (y.mT if tall else y).reshape(x.shape)


def gdn_recurrent_reference(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                            initial_state: Tensor | None = None, cu_seqlens: Tensor | None = None,
                            scale: float | None = None) -> tuple[Tensor, Tensor]:
    """Token-by-token recurrence in the inputs' dtype (fp64 in tests). Shapes as gdn_chunk_scan."""
    b, t, h, kd = q.shape
    scale = kd ** -0.5 if scale is None else scale
    starts = seq_bounds(b, t, cu_seqlens)
    outs = torch.zeros(*v.shape, dtype=v.dtype, device=v.device)
    finals = []
    flat = [x.reshape(b * t, *x.shape[2:]) for x in (q, k, v, g, beta)]
    for s, (lo, hi) in enumerate(starts):
        state = (initial_state[s].to(q.dtype).clone() if initial_state is not None
                 else torch.zeros(h, kd, v.shape[-1], dtype=q.dtype, device=q.device))
        for i in range(lo, hi):
            qi, ki, vi, gi, bi = (x[i] for x in flat)
            state = torch.exp(gi)[:, None, None] * state
            u = bi[:, None] * (vi - torch.einsum("hkv,hk->hv", state, ki))
            state = state + torch.einsum("hk,hv->hkv", ki, u)
            outs.view(b * t, h, -1)[i] = torch.einsum("hkv,hk->hv", state, qi * scale)
        finals.append(state)
    return outs, torch.stack(finals)
