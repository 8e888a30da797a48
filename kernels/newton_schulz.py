"""Symmetric Gram products for Newton-Schulz, batched over a bank of matrices.

Each Newton-Schulz step on X [B, m, n] (m <= n) is
    A = X Xᵀ            (m x m, symmetric)
    B = b·A + c·A·A     (symmetric, since A is)
    X = a·X + B·X       (a plain GEMM: cuBLAS baddbmm)
Both symmetric products come from one kernel: out = alpha·(Y Yᵀ) + beta·Z, which computes
only the tiles on and below the diagonal and writes each off-diagonal tile twice (as
itself and transposed), so the work is about half a full GEMM. With Y = X, alpha = 1,
beta = 0 it is line 1; with Y = Z = A, alpha = c, beta = b it is line 2.

Accumulation is fp32; inputs and outputs are bf16. Block sizes are fixed per shape family
(no autotune inside the training loop, where it would cost seconds).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


@triton.jit
def _sym_gram_kernel(
    y_ptr, z_ptr, out_ptr,
    M, K,
    s_yb, s_ym, s_yk,
    s_zb, s_zm, s_zn,
    s_ob, s_om, s_on,
    alpha, beta,
    HAS_Z: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):
    i_m = tl.program_id(0)
    i_n = tl.program_id(1)
    if i_n > i_m:  # the upper triangle is the transpose of the lower one
        return
    i_b = tl.program_id(2).to(tl.int64)  # int64: batch * stride can exceed int32
    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_n = i_n * BLOCK_M + tl.arange(0, BLOCK_M)
    o_k = tl.arange(0, BLOCK_K)
    m_m, m_n = o_m < M, o_n < M
    p_y = y_ptr + i_b * s_yb
    acc = tl.zeros((BLOCK_M, BLOCK_M), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        m_k = (k + o_k) < K
        b_a = tl.load(p_y + o_m[:, None] * s_ym + (k + o_k)[None, :] * s_yk, mask=m_m[:, None] & m_k[None, :], other=0.0)
        b_b = tl.load(p_y + o_n[:, None] * s_ym + (k + o_k)[None, :] * s_yk, mask=m_n[:, None] & m_k[None, :], other=0.0)
        if DOT_FP32:  # the interpreter multiplies bf16 bit patterns in tl.dot: upcast first
            b_a, b_b = b_a.to(tl.float32), b_b.to(tl.float32)
        acc += tl.dot(b_a, tl.trans(b_b))
    acc = acc * alpha
    if HAS_Z:
        p_z = z_ptr + i_b * s_zb + o_m[:, None] * s_zm + o_n[None, :] * s_zn
        acc += beta * tl.load(p_z, mask=m_m[:, None] & m_n[None, :], other=0.0).to(tl.float32)
    b_out = acc.to(out_ptr.dtype.element_ty)
    p_o = out_ptr + i_b * s_ob
    tl.store(p_o + o_m[:, None] * s_om + o_n[None, :] * s_on, b_out, mask=m_m[:, None] & m_n[None, :])
    if i_n < i_m:
        tl.store(p_o + o_n[:, None] * s_om + o_m[None, :] * s_on, tl.trans(b_out), mask=m_n[:, None] & m_m[None, :])


def _config(m: int, k: int) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_K, num_warps, num_stages) for an m x k operand.

    Chosen for H100 from the anchors' hard-coded configs (modded-nanogpt: 64/128 tiles,
    8 warps, 4 stages); not re-tuned here. The interpreter gets small tiles, where the
    simulated cost is per element anyway and odd test shapes need few wasted lanes.
    """
    if os.environ.get("TRITON_INTERPRET") == "1":
        return 16, 16, 1, 1
    if m <= 256:
        return 64, 64, 4, 3
    return 128, 64, 8, 3


def sym_gram(y: torch.Tensor, alpha: float = 1.0, z: torch.Tensor | None = None, beta: float = 0.0,
             out: torch.Tensor | None = None) -> torch.Tensor:
    """alpha·(y yᵀ) + beta·z for y [B, M, K] and symmetric z [B, M, M]; result [B, M, M] in y's dtype."""
    assert y.ndim == 3, "y must be [batch, M, K]"
    bsz, m, k = y.shape
    if out is None:
        out = torch.empty(bsz, m, m, device=y.device, dtype=y.dtype)
    if z is not None:
        assert z.shape == (bsz, m, m)
    zz = z if z is not None else out  # any pointer: never read without HAS_Z
    block_m, block_k, warps, stages = _config(m, k)
    grid = (triton.cdiv(m, block_m), triton.cdiv(m, block_m), bsz)
    _sym_gram_kernel[grid](
        y, zz, out, m, k,
        y.stride(0), y.stride(1), y.stride(2),
        zz.stride(0), zz.stride(1), zz.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        float(alpha), float(beta),
        HAS_Z=z is not None, DOT_FP32=os.environ.get("TRITON_INTERPRET") == "1",
        BLOCK_M=block_m, BLOCK_K=block_k, num_warps=warps, num_stages=stages,
    )
    return out
