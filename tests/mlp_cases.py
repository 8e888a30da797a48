"""Shared checks for pgolf::leaky_relu2_mlp, run both on the torch path (main suite) and on
the Triton kernels under the interpreter (tests/interp)."""
from __future__ import annotations

import itertools

import torch

from pgolf.ops.leaky_relu2_mlp import leaky_relu_squared_mlp
from pgolf.ops.reference import reference_leaky_relu2_mlp

# Odd sizes on purpose: rows, D and H multiples of no block size (the interpreter's blocks
# are 16), and a 3-D input whose leading dims flatten to 37 rows.
LEAD, D, H = (37,), 40, 72
# Error allowed, relative to the largest entry of the fp64 reference. Half-precision
# outputs and gradients are rounded to their dtype once per GEMM (and the interpreter
# truncates bf16 stores: up to one more ulp).
TOL = {torch.float32: 2e-6, torch.float16: 3e-3, torch.bfloat16: 2e-2}


def make_inputs(dtype, lead=LEAD, d=D, h=H, seed=0):
    """x in `dtype`, fp32 weights (CastedLinear's master copies), an upstream gradient."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, d, generator=g).to(dtype)
    w_up = torch.randn(h, d, generator=g) * d ** -0.5
    w_down = torch.randn(d, h, generator=g) * h ** -0.5
    upstream = torch.randn(*lead, d, generator=g)
    return x, w_up, w_down, upstream


def close(got, want, dtype):
    scale = max(want.abs().max().item(), 1e-6)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=TOL[dtype] * scale)


def check_against_reference(dtype, slope, lead=LEAD):
    x0, w_up0, w_down0, upstream = make_inputs(dtype, lead)
    x, w_up, w_down = (t.clone().requires_grad_() for t in (x0, w_up0, w_down0))
    out = leaky_relu_squared_mlp(x, w_up, w_down, slope)
    (out.float() * upstream).sum().backward()

    rx, rup, rdown = (t.double().requires_grad_() for t in (x0, w_up0, w_down0))
    ref = reference_leaky_relu2_mlp(rx, rup, rdown, slope)
    (ref * upstream.double()).sum().backward()

    assert out.dtype == dtype and out.shape == x0.shape
    assert x.grad.dtype == dtype and w_up.grad.dtype == torch.float32
    close(out.detach(), ref.detach(), dtype)
    for got, want in ((x.grad, rx.grad), (w_up.grad, rup.grad), (w_down.grad, rdown.grad)):
        close(got, want, dtype)


GRID = list(itertools.product([torch.float32, torch.float16, torch.bfloat16], [0.5, 0.0, 0.2]))


def grid_id(case):
    dtype, slope = case
    return f"{str(dtype)[6:]}-s{slope}"
