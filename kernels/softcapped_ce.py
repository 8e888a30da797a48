"""Softcapped cross-entropy over rows of logits, one Triton program per row.

softcap(x) = c·tanh(x/c), computed as c·(2σ(2x/c) − 1): σ runs in the Triton interpreter
(libdevice tanh does not) and gives the derivative for free, d softcap/dx = 4σ(1 − σ).

One kernel, three uses (constexpr flags):
- COMPUTE_LSE, not WRITE_GRAD: forward. Streams the row once (online max / sum-exp in
  fp32) and writes the row's loss and LSE.
- WRITE_GRAD, not COMPUTE_LSE: backward. Re-reads the row and writes
  dlogits = g·(softmax − onehot)·4σ(1 − σ) in the logits' dtype.
- both: forward and backward in one launch (the LM head's chunked path, where the loss is
  terminal): the gradient may overwrite the logits in place.
Rows whose target is ignore_index get loss 0 and gradient 0; a target outside [0, V) (a
corrupt batch) is never read and makes the row's loss NaN, loudly, as the torch path raises.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _softcapped_ce_kernel(
    x_ptr, x_stride,  # logits [N, V]
    dx_ptr, dx_stride,  # gradient out [N, V] (may alias x)
    t_ptr,  # targets [N] int64
    g_ptr,  # per-row upstream gradient [N] fp32 (WRITE_GRAD)
    loss_ptr, lse_ptr,  # [N] fp32 out (COMPUTE_LSE) / lse in (not COMPUTE_LSE)
    V, softcap, ignore_index,
    COMPUTE_LSE: tl.constexpr, WRITE_GRAD: tl.constexpr, BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # int64: row * stride overflows int32 at 98k x 8k
    p_x = x_ptr + row * x_stride
    target = tl.load(t_ptr + row)
    valid = target != ignore_index
    k = 2.0 / softcap

    if COMPUTE_LSE:
        m = float("-inf")
        s = 0.0
        for start in range(0, V, BLOCK_V):
            o_v = start + tl.arange(0, BLOCK_V)
            m_v = o_v < V
            b_x = tl.load(p_x + o_v, mask=m_v, other=0.0).to(tl.float32)
            b_z = softcap * (2.0 * tl.sigmoid(b_x * k) - 1.0)
            b_z = tl.where(m_v, b_z, float("-inf"))
            m_new = tl.maximum(m, tl.max(b_z, axis=0))
            s = s * tl.exp(m - m_new) + tl.sum(tl.exp(b_z - m_new), axis=0)
            m = m_new
        lse = m + tl.log(s)
        in_range = (target >= 0) & (target < V)  # never read outside the row; a bad target gives NaN
        x_t = tl.load(p_x + tl.where(valid & in_range, target, 0)).to(tl.float32)
        z_t = softcap * (2.0 * tl.sigmoid(x_t * k) - 1.0)
        tl.store(lse_ptr + row, lse)
        tl.store(loss_ptr + row, tl.where(valid, tl.where(in_range, lse - z_t, float("nan")), 0.0))
    else:
        lse = tl.load(lse_ptr + row)

    if WRITE_GRAD:
        g = tl.where(valid, tl.load(g_ptr + row), 0.0)
        p_dx = dx_ptr + row * dx_stride
        for start in range(0, V, BLOCK_V):
            o_v = start + tl.arange(0, BLOCK_V)
            m_v = o_v < V
            b_x = tl.load(p_x + o_v, mask=m_v, other=0.0).to(tl.float32)
            b_s = tl.sigmoid(b_x * k)
            b_p = tl.exp(softcap * (2.0 * b_s - 1.0) - lse)
            b_dz = b_p - tl.where(o_v == target, 1.0, 0.0)
            b_dx = g * b_dz * 4.0 * b_s * (1.0 - b_s)
            tl.store(p_dx + o_v, b_dx.to(dx_ptr.dtype.element_ty), mask=m_v)


def _launch(x, dx, targets, row_grad, loss, lse, softcap, ignore_index, compute_lse, write_grad):
    n, v = x.shape
    if n == 0:
        return
    block = min(triton.next_power_of_2(v), 8192)
    # Fixed config, no autotune: it must not run inside the training loop (and fails
    # under the interpreter). 8 warps keep 16-32 elements per thread at V=8192.
    _softcapped_ce_kernel[(n,)](
        x, x.stride(0), dx, dx.stride(0), targets, row_grad, loss, lse,
        v, float(softcap), int(ignore_index),
        COMPUTE_LSE=compute_lse, WRITE_GRAD=write_grad, BLOCK_V=block, num_warps=8 if block >= 4096 else 4,
    )


def _check(x: torch.Tensor, targets: torch.Tensor) -> None:
    assert x.ndim == 2 and x.stride(1) == 1, "logits must be 2-D with unit column stride"
    assert targets.shape == (x.shape[0],) and targets.dtype == torch.int64 and targets.is_contiguous()


def rows_forward(x: torch.Tensor, targets: torch.Tensor, softcap: float, ignore_index: int):
    """(loss [N] fp32, lse [N] fp32) of each row."""
    _check(x, targets)
    loss = torch.empty(x.shape[0], device=x.device, dtype=torch.float32)
    lse = torch.empty_like(loss)
    _launch(x, x, targets, loss, loss, lse, softcap, ignore_index, True, False)
    return loss, lse


def rows_backward(x, targets, lse, row_grad, softcap: float, ignore_index: int, out: torch.Tensor) -> torch.Tensor:
    """dlogits into `out` (which may be `x` itself) from the saved LSE and per-row gradient."""
    _check(x, targets)
    assert out.shape == x.shape and out.stride(1) == 1
    _launch(x, out, targets, row_grad.float().contiguous(), lse, lse.contiguous(), softcap, ignore_index, False, True)
    return out


def rows_forward_backward_(x, targets, row_grad, softcap: float, ignore_index: int):
    """Loss and LSE of each row, and the gradient written over `x` in place."""
    _check(x, targets)
    loss = torch.empty(x.shape[0], device=x.device, dtype=torch.float32)
    lse = torch.empty_like(loss)
    _launch(x, x, targets, row_grad.float().contiguous(), loss, lse, softcap, ignore_index, True, True)
    return loss, lse
