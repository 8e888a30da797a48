"""`pgolf::int6_matmul`: y = x @ (scale · W)ᵀ straight from packed int6 weights.

W [N, K] is held as int6 codes packed 4 in 3 bytes along K (pgolf.quant.packing) with an
fp16/fp32 scale per row. Paths, by where the op runs and how big M is:
- CUDA, M <= 16, bf16 activations: the CUDA kernel (pgolf._C, csrc/int6_matmul.cu) when
  built, else Triton; PGOLF_INT6_BACKEND=triton|cuda forces one (cuda refuses what it cannot run)
- CUDA, 16 < M < 2048: the Triton kernel (kernels/int6_matmul.py)
- CUDA, M >= 2048: unpack to bf16 once and use cuBLAS, which is compute-bound there anyway
- CPU: the reference (under TRITON_INTERPRET=1, the Triton kernel)
The reference, unpack + matmul in fp32, is the truth all paths are tested against.

Uses: scoring an artifact with its int6 layers kept packed (`pgolf eval --packed`), and the
forward of int6 fake-quant training (QAT, `int6_qat_linear`), whose backward is the
straight-through estimator.
"""
from __future__ import annotations

import functools
import os

import torch
from torch import Tensor

from pgolf.ops.backend import kernel_module, use_triton
from pgolf.ops.quantize import codes_for, sdclip_scale

SMALL_M, LARGE_M = 16, 2048


def unpack_int6(packed: Tensor, k: int) -> Tensor:
    """uint8 [N, 3·ceil(K/4)] -> int8 codes [N, K] (torch, on the tensor's device)."""
    words = packed.view(packed.shape[0], -1, 3).to(torch.int32)
    word = words[..., 0] | (words[..., 1] << 8) | (words[..., 2] << 16)
    codes = torch.stack([(word >> (6 * i)) & 63 for i in range(4)], dim=-1).reshape(packed.shape[0], -1)
    return (codes[:, :k] - 32).to(torch.int8)


def pack_int6(codes: Tensor) -> Tensor:
    """int8 codes [N, K] in [-32, 31] -> uint8 [N, 3·ceil(K/4)] (torch, on the tensor's device)."""
    n, k = codes.shape
    pad = (-k) % 4
    u = (codes.to(torch.int32) + 32)
    if pad:
        u = torch.cat([u, u.new_full((n, pad), 32)], dim=1)
    g = u.view(n, -1, 4)
    word = g[..., 0] | (g[..., 1] << 6) | (g[..., 2] << 12) | (g[..., 3] << 18)
    return torch.stack([(word >> (8 * j)) & 0xFF for j in range(3)], dim=-1).reshape(n, -1).to(torch.uint8)


def int6_matmul_reference(x: Tensor, packed: Tensor, scales: Tensor, k: int) -> Tensor:
    """The definition, in fp32 (fp64 for fp64 inputs)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    w = unpack_int6(packed, k).to(acc) * scales.to(acc)[:, None]
    return x.to(acc) @ w.T


@functools.cache
def _cuda_ext():
    try:
        import pgolf._C  # noqa: F401  (built by `python setup.py build_ext` where CUDA exists)
    except ImportError:
        return None
    return torch.ops.pgolf_cuda.int6_matmul_small_m


def _dequant_matmul(x: Tensor, packed: Tensor, scales: Tensor, k: int) -> Tensor:
    w = (unpack_int6(packed, k).float() * scales.float()[:, None]).to(x.dtype)  # one rounding, as the dense path
    return x @ w.T


@torch.library.custom_op("pgolf::int6_matmul", mutates_args=())
def int6_matmul_op(x: Tensor, packed: Tensor, scales: Tensor, k: int) -> Tensor:
    m = x.shape[0]
    backend = os.environ.get("PGOLF_INT6_BACKEND", "")
    if x.is_cuda:
        ext = _cuda_ext()
        fits_ext = ext is not None and x.dtype == torch.bfloat16 and 0 < m <= SMALL_M and packed.is_cuda
        if backend == "cuda" and not fits_ext:
            raise ValueError(f"PGOLF_INT6_BACKEND=cuda needs the built extension, bf16 activations and "
                             f"1 <= M <= {SMALL_M} rows; got M={m}, {x.dtype}")
        if fits_ext and backend != "triton":
            return ext(x.contiguous(), packed, scales.float().contiguous(), k)
        if m >= LARGE_M and backend == "":
            return _dequant_matmul(x, packed, scales, k)
    if use_triton(x):
        return kernel_module("int6_matmul").int6_matmul(x.contiguous(), packed.contiguous(), scales.contiguous(), k)
    return int6_matmul_reference(x, packed, scales, k).to(x.dtype)


@int6_matmul_op.register_fake
def _(x, packed, scales, k):
    return x.new_empty((x.shape[0], packed.shape[0]))


def _setup(ctx, inputs, output):
    x, packed, scales, k = inputs
    ctx.save_for_backward(packed, scales)
    ctx.k = k


def _backward(ctx, grad):
    packed, scales = ctx.saved_tensors
    w = unpack_int6(packed, ctx.k).to(grad.dtype) * scales.to(grad.dtype)[:, None]
    return grad @ w, None, None, None  # the packed weights are frozen


int6_matmul_op.register_autograd(_backward, setup_context=_setup)


def int6_matmul(x: Tensor, packed: Tensor, scales: Tensor, k: int) -> Tensor:
    """x [..., K] @ (scales · unpack(packed))ᵀ -> [..., N]."""
    if packed.dtype != torch.uint8 or packed.ndim != 2 or packed.shape[1] != 3 * -(-k // 4):
        raise ValueError(f"packed must be uint8 [N, {3 * -(-k // 4)}] for K={k}, got {packed.dtype} {tuple(packed.shape)}")
    if x.shape[-1] != k or scales.shape != (packed.shape[0],):
        raise ValueError(f"x [..., {k}] and scales [{packed.shape[0]}] expected, got {tuple(x.shape)}, {tuple(scales.shape)}")
    y = int6_matmul_op(x.reshape(-1, k), packed, scales, k)
    return y.reshape(*x.shape[:-1], packed.shape[0])


@torch.library.custom_op("pgolf::int6_qat_codes", mutates_args=())
def int6_qat_codes(weight: Tensor, clip_sigmas: float) -> tuple[Tensor, Tensor]:
    """Export's int6 codes [N, K] and per-row SDClip scales [N] (fp16-rounded, held fp32) of a weight.

    An op of its own so that torch.compile cannot see inside: inductor fuses the scales' fp16 cast
    away (it keeps fused casts at full precision), and compiled QAT would train against codes
    export never writes. The reference itself; no gradient (QAT's backward is straight-through)."""
    w = weight.detach().float()
    scale = sdclip_scale(w, 6, clip_sigmas).float()
    return codes_for(w, scale, 6), scale


@int6_qat_codes.register_fake
def _(weight, clip_sigmas):
    return weight.new_empty(weight.shape, dtype=torch.int8), weight.new_empty(weight.shape[:1], dtype=torch.float32)


class _Int6QAT(torch.autograd.Function):
    """Forward through the int6 kernel on freshly quantized weights; straight-through backward."""

    @staticmethod
    def forward(ctx, x, weight, clip_sigmas):
        codes, scale = int6_qat_codes(weight.detach(), clip_sigmas)
        ctx.save_for_backward(x, codes, scale)
        return int6_matmul(x, pack_int6(codes), scale, weight.shape[1])

    @staticmethod
    def backward(ctx, grad):
        x, codes, scale = ctx.saved_tensors
        w_hat = (codes.float() * scale[:, None]).to(grad.dtype)
        g2 = grad.reshape(-1, grad.shape[-1])
        grad_x = (g2 @ w_hat).reshape(x.shape)
        grad_w = g2.T.float() @ x.reshape(-1, x.shape[-1]).float()  # as if y = x Wᵀ: straight through
        return grad_x, grad_w, None


def int6_qat_linear(x: Tensor, weight: Tensor, clip_sigmas: float = 12.0) -> Tensor:
    """A linear layer whose forward sees its weight quantized to int6 (per-row SDClip scales)."""
    return _Int6QAT.apply(x, weight, clip_sigmas)
