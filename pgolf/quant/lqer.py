"""LQER: a low-rank correction of the quantization error (spec §5.11).

For a quantized matrix, E = W − Ŵ is approximated by its rank-r SVD, A = U_r·diag(S_r)
[rows, r] and B = V_rᵀ [r, cols], stored asymmetrically cheap:
- A in int2, codes {-2, -1, 0, 1}, one fp16 scale for the matrix: s_A = max|A| / 1.5
- B in int4, codes [-8, 7], one fp16 scale per 64 consecutive elements of flattened B:
  s = max|group| / 7.5
so W ≈ Ŵ + (s_A·q_A)(s_B·q_B). Applied to the tensors whose errors are largest.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

GROUP = 64


def lqer_parts(error: Tensor, rank: int) -> dict[str, np.ndarray]:
    u, s, vh = torch.linalg.svd(error.double(), full_matrices=False)
    a = u[:, :rank] * s[:rank]
    b = vh[:rank].reshape(-1)
    if b.numel() % GROUP:
        raise ValueError(f"LQER needs rank x cols divisible by {GROUP}, got {b.numel()}")
    tiny = torch.finfo(torch.float16).tiny  # a clamp below fp16's range would round to a zero scale
    a_scale = torch.clamp(a.abs().max() / 1.5, min=tiny).to(torch.float16)
    qa = torch.clamp(torch.round(a / a_scale.double()), -2, 1).to(torch.int8)
    groups = b.view(-1, GROUP)
    b_scale = torch.clamp(groups.abs().amax(dim=1) / 7.5, min=tiny).to(torch.float16)
    qb = torch.clamp(torch.round(groups / b_scale.double()[:, None]), -8, 7).to(torch.int8).reshape(-1)
    return {"lqer_a": qa.numpy(), "lqer_a_scale": a_scale.reshape(1).numpy(),
            "lqer_b": qb.numpy(), "lqer_b_scale": b_scale.numpy()}


def lqer_factors(parts: dict[str, np.ndarray], cols: int) -> tuple[Tensor, Tensor]:
    """The fp32 factors A = s_A·q_A [rows, r] and B = s_B·q_B [r, cols]."""
    qa = torch.from_numpy(parts["lqer_a"].astype(np.float32))
    a = qa * float(parts["lqer_a_scale"].astype(np.float32)[0])
    qb = torch.from_numpy(parts["lqer_b"].astype(np.float32)).view(-1, GROUP)
    b = (qb * torch.from_numpy(parts["lqer_b_scale"].astype(np.float32))[:, None]).reshape(a.shape[1], cols)
    return a, b


def lqer_correction(parts: dict[str, np.ndarray], shape: tuple[int, int]) -> Tensor:
    """A·B as an fp32 [rows, cols] matrix."""
    a, b = lqer_factors(parts, shape[1])
    return a @ b
