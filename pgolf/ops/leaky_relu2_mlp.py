"""The LeakyReLU(s)² MLP as a torch.library op: `pgolf::leaky_relu2_mlp` (spec §5.4, PR #493;
s = 0.5 in the records, s = 0 is the baseline's relu²).

    pre = x @ W_upᵀ      post = act(pre) = leaky_relu(pre, s)²      out = post @ W_downᵀ
    act'(p) = 2p (p > 0), 2s²·p (p <= 0)

What is fused, and why (reasoned, not measured: no GPU was available). At the record's
shape per GPU (M = 98,304 tokens, D = 512, H = 2048, bf16) each [M, H] tensor is 403 MB
and each of the MLP's six GEMMs (two forward, four backward) is 206 GFLOP: on an H100
(~700 TFLOP/s reached, ~3 TB/s) a GEMM takes ~0.3 ms, one pass over an [M, H] tensor
~0.13 ms. So [M, H] traffic outside the GEMMs is what a fusion can save. Unfused, with
the elementwise work at best in one kernel each way (torch.compile; eager takes more):
forward, the GEMM writes pre, then read pre, write post; backward, the GEMM writes dpost,
then read dpost and pre, write dpre.
- Up-projection with the activation in its epilogue (kernels/leaky_relu2_mlp.py): one
  pass writes pre (kept for the backward, only when a gradient is wanted) and post (the
  down-projection's input): saves one read of pre (403 MB; without a gradient, pre is
  not written either: 806 MB).
- Backward: dpre = (dout @ W_down) · act'(pre) with act' in the epilogue of that GEMM:
  dpost is never written nor read back (806 MB). The other four products
  (out = post @ W_downᵀ, dW_down = doutᵀ @ post, dx and dW_up from dpre) are plain
  matmuls, which cuBLAS runs at its best.
  Together ~1.2 GB a layer per step, ~0.4 ms of ~2.5 ms of MLP time (estimate), a gain
  only while our two Triton GEMMs stay within ~30% of cuBLAS: benchmarks/bench_mlp.py.
- Kept as the record does: post saved for dW_down. Keeping pre only would save 403 MB of
  activation memory a layer, but post must then be rebuilt inside a custom dW_down GEMM
  (a split-K reduction over M = 98k of our own in place of cuBLAS) for the same bytes.
- Not fused: the whole MLP in one kernel (an M-tile's [BM, D] fp32 output accumulator
  does not fit in registers at D = 512 without recomputing the up GEMM per output slice);
  act in the down GEMM's prologue (it would save the post write, 403 MB, but dW_down
  needs post, so the backward would write it instead).
Accumulation is fp32; post comes from the fp32 accumulator (eager rounds pre first),
act' from the stored pre, as eager autograd has it.

The two fused GEMMs have a Triton kernel (pgolf_kernels.leaky_relu2_mlp) and a torch
version used on CPU; `pgolf.ops.reference.reference_leaky_relu2_mlp` (autograd, fp64 in tests) is
the truth.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pgolf.ops.backend import kernel_module, use_triton

DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)


# ---------------------------------------------------------------------------------------
# The two fused GEMMs: Triton where it runs, torch elsewhere. fp64 inputs (gradcheck)
# take the torch path in fp64; other dtypes accumulate in fp32 and round once, as the kernel.


def _acc(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _kernel(x: Tensor) -> bool:
    return x.dtype != torch.float64 and use_triton(x)


def _up_torch(x: Tensor, w_up: Tensor, slope: float, store_pre: bool) -> tuple[Tensor | None, Tensor]:
    acc = x.to(_acc(x)) @ w_up.to(_acc(x)).T
    post = F.leaky_relu(acc, slope).square().to(x.dtype)
    return (acc.to(x.dtype) if store_pre else None), post


def _grad_pre_torch(dout: Tensor, w_down: Tensor, pre: Tensor, slope: float) -> Tensor:
    acc = dout.to(_acc(dout)) @ w_down.to(_acc(dout))
    p = pre.to(acc.dtype)
    return (acc * torch.where(p > 0, 2.0 * p, (2.0 * slope * slope) * p)).to(dout.dtype)


def _up(x, w_up, slope, store_pre):
    if _kernel(x):
        return kernel_module("leaky_relu2_mlp").up(x, w_up, slope, store_pre)
    return _up_torch(x, w_up, slope, store_pre)


def _grad_pre(dout, w_down, pre, slope):
    if _kernel(dout):
        return kernel_module("leaky_relu2_mlp").grad_pre(dout, w_down, pre, slope)
    return _grad_pre_torch(dout, w_down, pre, slope)


# ---------------------------------------------------------------------------------------
# pgolf::leaky_relu2_mlp and its backward


@torch.library.custom_op("pgolf::leaky_relu2_mlp", mutates_args=())
def leaky_relu2_mlp_op(x: Tensor, w_up: Tensor, w_down: Tensor, negative_slope: float,
                       save_for_backward: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(out [M, D], pre [M, H], post [M, H]); pre and post are empty unless save_for_backward."""
    pre, post = _up(x, w_up, negative_slope, save_for_backward)
    out = post @ w_down.T
    if not save_for_backward:
        return out, x.new_empty(0), x.new_empty(0)
    return out, pre, post


@leaky_relu2_mlp_op.register_fake
def _(x, w_up, w_down, negative_slope, save_for_backward):
    m, h = x.shape[0], w_up.shape[0]
    out = x.new_empty((m, w_down.shape[0]))
    if not save_for_backward:
        return out, x.new_empty(0), x.new_empty(0)
    return out, x.new_empty((m, h)), x.new_empty((m, h))


@torch.library.custom_op("pgolf::leaky_relu2_mlp_backward", mutates_args=())
def leaky_relu2_mlp_backward_op(dout: Tensor, x: Tensor, w_up: Tensor, w_down: Tensor, pre: Tensor, post: Tensor,
                                negative_slope: float) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dW_up, dW_down) from the saved pre and post."""
    dout = dout.contiguous()
    dw_down = dout.T @ post
    dpre = _grad_pre(dout, w_down, pre, negative_slope)
    return dpre @ w_up, dpre.T @ x, dw_down


@leaky_relu2_mlp_backward_op.register_fake
def _(dout, x, w_up, w_down, pre, post, negative_slope):
    return torch.empty_like(x), torch.empty_like(w_up), torch.empty_like(w_down)


def _setup(ctx, inputs, output):
    x, w_up, w_down, negative_slope, save_for_backward = inputs
    _, pre, post = output
    ctx.mark_non_differentiable(pre, post)
    ctx.negative_slope = negative_slope
    ctx.saved = save_for_backward
    ctx.save_for_backward(x, w_up, w_down, pre, post)


def _backward(ctx, dout, _dpre, _dpost):
    if not ctx.saved:
        raise RuntimeError("pgolf::leaky_relu2_mlp ran with save_for_backward=False and cannot backpropagate")
    x, w_up, w_down, pre, post = ctx.saved_tensors
    dx, dw_up, dw_down = leaky_relu2_mlp_backward_op(dout, x, w_up, w_down, pre, post, ctx.negative_slope)
    return dx, dw_up, dw_down, None, None


leaky_relu2_mlp_op.register_autograd(_backward, setup_context=_setup)


# ---------------------------------------------------------------------------------------
# Public function


def leaky_relu_squared_mlp(x: Tensor, w_up: Tensor, w_down: Tensor, negative_slope: float = 0.5) -> Tensor:
    """leaky_relu(x [..., D] @ w_up [H, D]ᵀ, s)² @ w_down [D, H]ᵀ -> [..., D], in x's dtype.

    The weights are cast to x's dtype (as CastedLinear does); their gradients flow back
    through that cast. pre and post are kept for the backward only when one is wanted.
    """
    if x.dtype not in DTYPES or x.ndim < 1:
        raise ValueError(f"x must be a bf16, fp16, fp32 or fp64 tensor [..., D], got {x.dtype} {tuple(x.shape)}")
    if w_up.ndim != 2 or w_down.ndim != 2:
        raise ValueError(f"w_up and w_down must be 2-D, got {tuple(w_up.shape)} and {tuple(w_down.shape)}")
    d, h = x.shape[-1], w_up.shape[0]
    if w_up.shape[1] != d or w_down.shape != (d, h):
        raise ValueError(f"x [..., {d}] needs w_up [H, {d}] and w_down [{d}, H]; "
                         f"got w_up {tuple(w_up.shape)}, w_down {tuple(w_down.shape)}")
    if not math.isfinite(negative_slope):
        raise ValueError(f"negative_slope must be a finite number, got {negative_slope}")
    w_up, w_down = w_up.to(x.dtype), w_down.to(x.dtype)
    flat = x.reshape(-1, d)
    save = torch.is_grad_enabled() and (flat.requires_grad or w_up.requires_grad or w_down.requires_grad)
    out, _, _ = leaky_relu2_mlp_op(flat.contiguous(), w_up.contiguous(), w_down.contiguous(), float(negative_slope),
                                   bool(save))
    return out.reshape(*x.shape[:-1], d)
