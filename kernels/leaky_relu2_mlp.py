"""The two GEMMs of the LeakyReLU(s)² MLP that carry the activation in their epilogue.

One tiled GEMM, C [M, N] = A [M, K] @ B [N, K]ᵀ (any strides: B is W_up as stored, or
W_downᵀ read through its strides, never copied), with fp32 accumulation and one of two
epilogues on the accumulator tile before it leaves the registers (constexpr BACKWARD):

- forward (A = x, B = W_up): post = act(acc) = where(acc > 0, acc, s·acc)² in the
  input dtype, and, when STORE_PRE, pre = acc (the backward's only activation input).
  post is computed from the fp32 accumulator, not from the rounded pre.
- backward (A = dout, B = W_downᵀ): dpre = acc · act'(pre), act'(p) = where(p > 0, 2p,
  2s²·p), with pre loaded tile by tile from what the forward stored: the gradient of
  `post` never exists in memory.

Programs walk the tiles in groups of GROUP_M row blocks, so a row block of A (the [M, K]
activations) is read from HBM once and served from L2 to every column block (B, a 2 MB
weight, stays in L2 anyway). Configs are fixed, not autotuned (autotune cannot
run inside the training loop, nor under the interpreter) and not yet tuned on a GPU.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


@triton.jit
def _gemm_act_kernel(
    a_ptr, b_ptr,  # A [M, K], B [N, K] (strided)
    pre_ptr,  # pre [M, N]: written by the forward (STORE_PRE), read by the backward
    out_ptr,  # post (forward) or dpre (backward) [M, N]
    M, N, K,
    s_am, s_ak, s_bn, s_bk, s_pm, s_om,  # unit stride along N for pre and out
    slope,
    BACKWARD: tl.constexpr, STORE_PRE: tl.constexpr, DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    n_m, n_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * n_n
    first_m = (pid // per_group) * GROUP_M
    group_m = tl.minimum(n_m - first_m, GROUP_M)
    i_m = first_m + (pid % per_group) % group_m
    i_n = (pid % per_group) // group_m

    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_m, m_n = o_m < M, o_n < N
    p_a = a_ptr + o_m.to(tl.int64)[:, None] * s_am  # int64: rows x stride passes 2^31 at large M
    p_b = b_ptr + o_n.to(tl.int64)[None, :] * s_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_k = o_k < K
        b_a = tl.load(p_a + o_k[None, :] * s_ak, mask=m_m[:, None] & m_k[None, :], other=0.0)  # [BM, BK]
        b_b = tl.load(p_b + o_k[:, None] * s_bk, mask=m_k[:, None] & m_n[None, :], other=0.0)  # [BK, BN]
        if DOT_FP32:  # fp32 inputs (exact, no TF32); and the interpreter's tl.dot is wrong on bf16
            acc += tl.dot(b_a.to(tl.float32), b_b.to(tl.float32), input_precision="ieee")
        else:
            acc = tl.dot(b_a, b_b, acc)

    m_mn = m_m[:, None] & m_n[None, :]
    o_mn = o_m.to(tl.int64)[:, None]
    p_out = out_ptr + o_mn * s_om + o_n[None, :]
    if BACKWARD:
        b_pre = tl.load(pre_ptr + o_mn * s_pm + o_n[None, :], mask=m_mn, other=0.0).to(tl.float32)
        b_d = tl.where(b_pre > 0, 2.0 * b_pre, (2.0 * slope * slope) * b_pre)
        tl.store(p_out, (acc * b_d).to(out_ptr.dtype.element_ty), mask=m_mn)
    else:
        if STORE_PRE:
            tl.store(pre_ptr + o_mn * s_pm + o_n[None, :], acc.to(pre_ptr.dtype.element_ty), mask=m_mn)
        b_h = tl.where(acc > 0, acc, slope * acc)
        tl.store(p_out, (b_h * b_h).to(out_ptr.dtype.element_ty), mask=m_mn)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _fp32_dot(dtype: torch.dtype) -> bool:
    """fp32 inputs always (exact: no TF32); bf16 under the interpreter, whose bf16 tl.dot is
    wrong. fp16 keeps the native dot there, so the interpreter tier runs the GPU's branch."""
    return dtype == torch.float32 or (_interpreting() and dtype == torch.bfloat16)


def _config(dtype: torch.dtype) -> tuple[int, int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages); not tuned on a GPU yet."""
    if _interpreting():
        return 16, 16, 16, 2, 1, 1
    if dtype == torch.float32:  # tests only: ieee fp32 dots, smaller tiles for the register budget
        return 64, 64, 32, 8, 4, 2
    # 128 x 128 fp32 accumulator over 8 warps = 64 registers a thread; K = 512 or 2048 is a
    # multiple of 64, so the main loop has no ragged K block at the record's shapes.
    return 128, 128, 64, 8, 8, 3


def _launch(a, b, pre, out, slope: float, backward: bool, store_pre: bool) -> None:
    m, k = a.shape
    n = b.shape[0]
    if m == 0 or n == 0:
        return
    bm, bn, bk, gm, warps, stages = _config(a.dtype)
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    pre_arg = pre if pre is not None else out  # never touched when not STORE_PRE and not BACKWARD
    _gemm_act_kernel[grid](
        a, b, pre_arg, out, m, n, k,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), pre_arg.stride(0), out.stride(0),
        float(slope),
        BACKWARD=backward, STORE_PRE=store_pre, DOT_FP32=_fp32_dot(a.dtype),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=gm, num_warps=warps, num_stages=stages,
    )


def up(x: torch.Tensor, w_up: torch.Tensor, slope: float, store_pre: bool):
    """(pre [M, H] or None, post [M, H]) of x [M, D] @ w_up [H, D]ᵀ, in x's dtype."""
    assert x.ndim == 2 and w_up.ndim == 2 and x.shape[1] == w_up.shape[1] and x.dtype == w_up.dtype
    m, h = x.shape[0], w_up.shape[0]
    post = torch.empty(m, h, device=x.device, dtype=x.dtype)
    pre = torch.empty_like(post) if store_pre else None
    _launch(x, w_up, pre, post, slope, backward=False, store_pre=store_pre)
    return pre, post


def grad_pre(dout: torch.Tensor, w_down: torch.Tensor, pre: torch.Tensor, slope: float) -> torch.Tensor:
    """dpre [M, H] = (dout [M, D] @ w_down [D, H]) · act'(pre), in dout's dtype."""
    assert dout.ndim == 2 and w_down.ndim == 2 and dout.shape[1] == w_down.shape[0] and dout.dtype == w_down.dtype
    assert pre.shape == (dout.shape[0], w_down.shape[1]) and pre.stride(1) == 1
    dpre = torch.empty_like(pre, memory_format=torch.contiguous_format)
    _launch(dout, w_down.T, pre, dpre, slope, backward=True, store_pre=False)
    return dpre
