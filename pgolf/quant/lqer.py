"""LQER: a low-rank correction of the quantization error (spec §5.11, frontier F7.3).

For a quantized matrix, E = W − Ŵ is approximated by its rank-r SVD, A = U_r·diag(S_r)
[rows, r] and B = V_rᵀ [r, cols], and the factors are stored as integer codes, in one of the
records' two packings:
- asymmetric (`asym_group` > 0 and r·cols a multiple of it; the records' LQER_ASYM_ENABLED):
  A in int2, codes {-2, -1, 0, 1}, one fp16 scale for the matrix, s_A = max|A| / 1.5;
  B in int4, codes [-8, 7], one fp16 scale per `asym_group` consecutive elements of
  flattened B, s = max|group| / 7.5 (64 in #1855, 32 in #2135)
- symmetric (`asym_group` 0, or the records' fallback when r·cols does not divide): A and B
  in int`factor_bits`, codes in [-R, R] with R = 2^(bits-1) − 1, one fp16 scale per row of
  A and per row of B, s = row max / R
Both are held alike: A's codes [rows, r] with 1 or `rows` scales, B's codes flattened [r·cols]
with one scale per group of consecutive elements (a row of B is a group of cols), so
W ≈ Ŵ + (s_A·q_A)(s_B·q_B) decodes both. Applied to the tensors whose errors are largest.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_TINY = torch.finfo(torch.float16).tiny  # a clamp below fp16's range would round to a zero scale


def _codes(x: Tensor, scale: Tensor, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes of x [n, g] for fp16 scales [n] (the codes are rounded with the fp16 value)."""
    s16 = torch.clamp(scale, min=_TINY).to(torch.float16)
    q = torch.clamp(torch.round(x / s16.double()[:, None]), lo, hi).to(torch.int8)
    return q.numpy(), s16.numpy()


def _asym(a: Tensor, b: Tensor, group: int) -> dict[str, np.ndarray]:
    qa, sa = _codes(a.reshape(1, -1), a.abs().max().reshape(1) / 1.5, -2, 1)
    groups = b.reshape(-1, group)
    qb, sb = _codes(groups, groups.abs().amax(dim=1) / 7.5, -8, 7)
    return {"lqer_a": qa.reshape(a.shape), "lqer_a_scale": sa, "lqer_b": qb.reshape(-1), "lqer_b_scale": sb}


def _sym(a: Tensor, b: Tensor, bits: int) -> dict[str, np.ndarray]:
    r = (1 << (bits - 1)) - 1
    qa, sa = _codes(a, a.abs().amax(dim=1) / r, -r, r)
    qb, sb = _codes(b, b.abs().amax(dim=1) / r, -r, r)
    return {"lqer_a": qa, "lqer_a_scale": sa, "lqer_b": qb.reshape(-1), "lqer_b_scale": sb}


def lqer_parts(error: Tensor, rank: int, asym_group: int = 64, factor_bits: int = 4) -> dict[str, np.ndarray]:
    """The factors of `error` [rows, cols] at rank min(rank, rows, cols), packed asymmetrically
    in groups of `asym_group` where r·cols divides into them, else symmetrically at `factor_bits`."""
    u, s, vh = torch.linalg.svd(error.double(), full_matrices=False)
    r = min(rank, s.numel())
    a, b = u[:, :r] * s[:r], vh[:r]
    if asym_group > 0 and b.numel() % asym_group == 0:
        return _asym(a, b, asym_group)
    return _sym(a, b, factor_bits)


def lqer_factors(parts: dict[str, np.ndarray], cols: int) -> tuple[Tensor, Tensor]:
    """The fp32 factors A = s_A·q_A [rows, r] and B = s_B·q_B [r, cols], of either packing."""
    qa = torch.from_numpy(parts["lqer_a"].astype(np.float32))
    sa = torch.from_numpy(parts["lqer_a_scale"].astype(np.float32))
    a = qa * (sa[0] if sa.numel() == 1 else sa[:, None])
    sb = torch.from_numpy(parts["lqer_b_scale"].astype(np.float32))
    qb = torch.from_numpy(parts["lqer_b"].astype(np.float32)).view(sb.numel(), -1)
    b = (qb * sb[:, None]).reshape(a.shape[1], cols)
    return a, b


def lqer_correction(parts: dict[str, np.ndarray], shape: tuple[int, int]) -> Tensor:
    """A·B as an fp32 [rows, cols] matrix."""
    a, b = lqer_factors(parts, shape[1])
    return a @ b
