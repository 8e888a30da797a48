"""GPTQ with SDClip scales (spec §5.11).

SDClip fixes each row's scale from its spread, s = k·std(row) / R, with k the "clip sigmas"
of the tensor's class and R = 2^(bits-1) - 1. GPTQ then chooses the codes column by column
(largest Hessian diagonal first, "act-order"), pushing each column's rounding error onto the
columns not yet quantized through the inverse Hessian's Cholesky factor, in blocks of 128
columns with a lazy update of the rest: it minimises the layer's output error on the
calibration inputs, tr((W − Ŵ) H (W − Ŵ)ᵀ), instead of the weights' own error.

AWQ-lite (frontier F7.1) runs inside the same solve: the columns it protects (`hi_cols`) are
coded with their own per-row scale and wider range (`hi_scale`, `hi_bits`), and the error fed
forward from each column is that of its own reconstruction.
"""
from __future__ import annotations

import torch
from torch import Tensor

from pgolf.ops.quantize import levels


def gptq_codes(w: Tensor, hessian: Tensor, scale: Tensor, bits: int, block: int = 128, damp: float = 0.01,
               hi_cols: Tensor | None = None, hi_scale: Tensor | None = None, hi_bits: int = 8) -> Tensor:
    """int8 codes of `w` [rows, cols] for per-row `scale`, given the input Hessian [cols, cols];
    the columns of the bool mask `hi_cols` use the per-row `hi_scale` and `hi_bits` instead."""
    w = w.detach().double().clone()
    h = hessian.detach().double().clone()
    rows, cols = w.shape
    s = scale.double()[:, None].expand(rows, cols).clone()  # each column's scale, per row
    r = torch.full((cols,), float(levels(bits)), dtype=torch.float64)
    if hi_cols is not None:
        s[:, hi_cols] = hi_scale.double()[:, None]
        r[hi_cols.cpu()] = float(levels(hi_bits))
    dead = torch.diag(h) == 0  # inputs never seen: any code will do, choose 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    perm = torch.argsort(torch.diag(h), descending=True)
    w, h, s = w[:, perm], h[perm][:, perm], s[:, perm]
    r = r[perm.cpu()].tolist()  # host floats: no device sync per column
    h += damp * torch.mean(torch.diag(h)) * torch.eye(cols, dtype=h.dtype, device=h.device)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    codes = torch.zeros_like(w)
    for lo in range(0, cols, block):
        hi = min(lo + block, cols)
        wb = w[:, lo:hi].clone()
        errors = torch.zeros_like(wb)
        ub = u[lo:hi, lo:hi]
        for i in range(hi - lo):
            sc, rc = s[:, lo + i:lo + i + 1], r[lo + i]
            q = torch.clamp(torch.round(wb[:, i:i + 1] / sc), -rc, rc)
            codes[:, lo + i] = q[:, 0]
            err = (wb[:, i:i + 1] - q * sc) / ub[i, i]
            wb[:, i:] -= err * ub[i:i + 1, i:]
            errors[:, i] = err[:, 0]
        w[:, hi:] -= errors @ u[lo:hi, hi:]
    return codes[:, torch.argsort(perm)].to(torch.int8)
