"""Newton-Schulz orthogonalisation for Muon as a batched op, `pgolf::newton_schulz`.

For each matrix G of a bank [B, m, n]: X = G / (‖G‖_F·norm_scale + eps), transposed so
rows <= cols; then per step with coefficients (a, b, c):
    A = X Xᵀ,   X <- a·X + (b·A + c·A²)·X
The quintic pushes every singular value of X towards ~1 without an SVD, so the result
approximates the polar factor U Vᵀ of G. bf16 in the iteration (as Muon always runs it),
fp32 accumulation, bf16 out. No autograd: it is an optimizer step, not a layer.

Coefficients: the classic fixed quintic, or Polar Express (one tuple per step, spec §5.8;
asked for more steps than it has, the last tuple repeats).
"""
from __future__ import annotations

import torch
from torch import Tensor

from pgolf.ops.backend import kernel_module, use_triton

CLASSIC = ((3.4445, -4.7750, 2.0315),)
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
COEFFICIENT_SETS = {"classic": CLASSIC, "polar_express": POLAR_EXPRESS}


def coefficient_schedule(name: str, steps: int) -> list[tuple[float, float, float]]:
    """The (a, b, c) of each step: a set's tuples in order, its last one repeated."""
    if name not in COEFFICIENT_SETS:
        raise ValueError(f"coefficients must be one of {sorted(COEFFICIENT_SETS)}, got {name!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    table = COEFFICIENT_SETS[name]
    return [table[min(i, len(table) - 1)] for i in range(steps)]


def normalized_input(x: Tensor, norm_scale: float, eps: float, dtype: torch.dtype) -> Tensor:
    xf = x.to(torch.float64 if dtype == torch.float64 else torch.float32)
    norm = torch.linalg.matrix_norm(xf, keepdim=True)  # Frobenius, per matrix
    return (xf / (norm * norm_scale + eps)).to(dtype)


def _iterate_torch(y: Tensor, coefficients: list[float]) -> Tensor:
    for i in range(0, len(coefficients), 3):
        a, b, c = coefficients[i:i + 3]
        gram = y @ y.mT
        y = torch.baddbmm(y, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), y, beta=a)
    return y


def _iterate_triton(y: Tensor, coefficients: list[float]) -> Tensor:
    k = kernel_module("newton_schulz")
    gram = torch.empty(y.shape[0], y.shape[1], y.shape[1], device=y.device, dtype=y.dtype)
    poly = torch.empty_like(gram)
    for i in range(0, len(coefficients), 3):
        a, b, c = coefficients[i:i + 3]
        k.sym_gram(y, out=gram)  # A = Y Yᵀ, half the tiles
        k.sym_gram(gram, alpha=c, z=gram, beta=b, out=poly)  # b·A + c·A², half the tiles
        y = torch.baddbmm(y, poly, y, beta=a)  # a·Y + B·Y
    return y


@torch.library.custom_op("pgolf::newton_schulz", mutates_args=())
def newton_schulz_op(x: Tensor, coefficients: list[float], norm_scale: float, eps: float) -> Tensor:
    """x [B, m, n] -> bf16 [B, m, n]; `coefficients` is the flat list a0, b0, c0, a1, ..."""
    tall = x.shape[-2] > x.shape[-1]
    y = normalized_input(x.mT if tall else x, norm_scale, eps, torch.bfloat16).contiguous()
    y = _iterate_triton(y, coefficients) if use_triton(y) else _iterate_torch(y, coefficients)
    return (y.mT if tall else y).contiguous()


@newton_schulz_op.register_fake
def _(x, coefficients, norm_scale, eps):
    return torch.empty(x.shape, device=x.device, dtype=torch.bfloat16)


def newton_schulz(x: Tensor, steps: int = 5, coefficients: str = "polar_express", norm_scale: float = 1.0,
                  eps: float = 1e-7) -> Tensor:
    """Orthogonalise a matrix [m, n] or a bank [B, m, n]; bf16 result of the same shape."""
    if x.ndim not in (2, 3) or not x.is_floating_point():
        raise ValueError(f"expected a float matrix or bank of matrices, got {tuple(x.shape)} {x.dtype}")
    if not norm_scale > 0:
        raise ValueError(f"norm_scale must be positive, got {norm_scale}")
    flat = [float(v) for abc in coefficient_schedule(coefficients, steps) for v in abc]
    out = newton_schulz_op(x if x.ndim == 3 else x[None], flat, float(norm_scale), float(eps))
    return out if x.ndim == 3 else out[0]
