"""Newton-Schulz orthogonalisation for Muon: the eager reference.

Each step: A = X Xᵀ, X <- aX + (bA + cA²)X, on X normalised by its Frobenius norm and
transposed so rows <= cols, in bf16 (spec §4.2). The quintic's coefficients push every
singular value towards ~1 without computing an SVD.
"""
from __future__ import annotations

import torch
from torch import Tensor

CLASSIC = (3.4445, -4.7750, 2.0315)  # the baseline's fixed quintic


def newton_schulz(g: Tensor, steps: int = 5, coefficients: tuple[float, float, float] = CLASSIC,
                  eps: float = 1e-7) -> Tensor:
    """Approximately orthogonalise a 2-D matrix; returns bf16 of the same shape."""
    a, b, c = coefficients
    x = g.bfloat16()
    x = x / (x.norm() + eps)
    transposed = g.size(0) > g.size(1)
    if transposed:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if transposed else x
