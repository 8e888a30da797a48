"""y = x @ (scale · W)ᵀ with W held as packed int6 codes: 4 codes in 3 bytes along K.

Each program computes a [BLOCK_M, BLOCK_N] tile of y. Per K block it gathers, for every
code k of the tile's rows, the three bytes of k's group (byte 3·(k//4) onward; the four
codes of a group share them, so the repeats come from cache), extracts the 6 bits at
6·(k%4), removes the bias of 32 and feeds the codes to tl.dot as bf16 (exact for |q| <= 32).
The per-row scale multiplies the fp32 accumulator once, at the end. Weight traffic is
0.75 bytes per weight instead of 2 (bf16): the win is where the matmul is memory-bound,
i.e. small M (eval and TTT decode-like shapes).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


@triton.jit
def _int6_matmul_kernel(
    x_ptr, w_ptr, s_ptr, y_ptr,
    M, N, K, row_bytes,
    s_xm, s_xk, s_ym, s_yn,
    DOT_FP32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    i_m = tl.program_id(0)
    i_n = tl.program_id(1)
    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_m, m_n = o_m < M, o_n < N
    p_w = w_ptr + o_n.to(tl.int64)[:, None] * row_bytes  # [BLOCK_N, 1] row starts
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_k = o_k < K
        b_x = tl.load(x_ptr + o_m[:, None] * s_xm + o_k[None, :] * s_xk, mask=m_m[:, None] & m_k[None, :], other=0.0)
        byte = 3 * (o_k // 4)[None, :]  # [1, BLOCK_K]
        mask = m_n[:, None] & m_k[None, :]
        b0 = tl.load(p_w + byte, mask=mask, other=0).to(tl.int32)
        b1 = tl.load(p_w + byte + 1, mask=mask, other=0).to(tl.int32)
        b2 = tl.load(p_w + byte + 2, mask=mask, other=0).to(tl.int32)
        word = b0 | (b1 << 8) | (b2 << 16)
        code = ((word >> (6 * (o_k % 4))[None, :]) & 63) - 32  # [BLOCK_N, BLOCK_K]
        code = tl.where(mask, code, 0)
        if DOT_FP32:  # fp32 activations; and the interpreter's tl.dot is wrong on bf16 operands
            acc += tl.dot(b_x.to(tl.float32), tl.trans(code.to(tl.float32)))
        else:
            acc += tl.dot(b_x.to(tl.bfloat16), tl.trans(code.to(tl.bfloat16)))
    scale = tl.load(s_ptr + o_n, mask=m_n, other=0.0).to(tl.float32)
    acc = acc * scale[None, :]
    tl.store(y_ptr + o_m[:, None] * s_ym + o_n[None, :] * s_yn, acc.to(y_ptr.dtype.element_ty),
             mask=m_m[:, None] & m_n[None, :])


def _config(m: int) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages); not tuned on a GPU yet."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return 16, 16, 16, 1, 1
    if m <= 16:
        return 16, 64, 128, 4, 3
    if m <= 64:
        return 64, 64, 64, 4, 3
    return 128, 128, 64, 8, 3


def int6_matmul(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, k: int) -> torch.Tensor:
    """x [M, K] @ (scales[:, None] · unpack(packed) [N, K])ᵀ -> [M, N] in x's dtype."""
    assert x.ndim == 2 and x.shape[1] == k and packed.ndim == 2 and packed.dtype == torch.uint8
    assert packed.is_contiguous() and scales.shape == (packed.shape[0],)
    m, n = x.shape[0], packed.shape[0]
    y = torch.empty(m, n, device=x.device, dtype=x.dtype)
    bm, bn, bk, warps, stages = _config(m)
    grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))
    _int6_matmul_kernel[grid](
        x, packed, scales, y, m, n, k, packed.shape[1],
        x.stride(0), x.stride(1), y.stride(0), y.stride(1),
        DOT_FP32=os.environ.get("TRITON_INTERPRET") == "1" or x.dtype == torch.float32,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages,
    )
    return y
