"""Shared checks for the softcapped CE ops, run both on the torch path (main suite) and
on the Triton kernels under the interpreter (tests/interp)."""
from __future__ import annotations

import itertools

import torch

from pgolf.ops.reference import reference_softcapped_ce
from pgolf.ops.softcapped_ce import linear_softcapped_cross_entropy, softcapped_cross_entropy

# Odd sizes on purpose: N and V not multiples of any block, V not a power of two.
N, V, D = 37, 1000, 48
# Loss is accumulated in fp32 whatever the input dtype; gradients are stored in the input dtype.
GRAD_TOL = {torch.float32: (1e-5, 1e-6), torch.float16: (2e-3, 2e-6), torch.bfloat16: (1.6e-2, 2e-5)}
LOSS_ATOL = 2e-5


def make_inputs(dtype, seed=0, ignore=True, weighted=True, scale=12.0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(N, V, generator=g) * scale).to(dtype)
    targets = torch.randint(0, V, (N,), generator=g)
    if ignore:
        targets[[0, 5, 36]] = -100
    weights = torch.randint(0, 7, (N,), generator=g).float() if weighted else None
    return logits, targets, weights


def check_logits_form(dtype, softcap, reduction, weighted, ignore):
    logits, targets, weights = make_inputs(dtype, ignore=ignore, weighted=weighted)
    x = logits.clone().requires_grad_()
    loss = softcapped_cross_entropy(x, targets, weights, softcap, reduction=reduction)
    upstream = torch.randn(loss.shape, generator=torch.Generator().manual_seed(1)).to(loss.dtype)
    (loss * upstream).sum().backward()

    ref_x = logits.double().requires_grad_()
    ref = reference_softcapped_ce(ref_x, targets, weights, softcap, reduction=reduction)
    (ref * upstream.double()).sum().backward()

    assert loss.dtype == torch.float32 and loss.shape == ref.shape
    torch.testing.assert_close(loss.double(), ref.detach(), atol=LOSS_ATOL, rtol=1e-5)
    rtol, atol = GRAD_TOL[dtype]
    assert x.grad.dtype == dtype
    torch.testing.assert_close(x.grad.double(), ref_x.grad, rtol=rtol, atol=atol)


def check_linear_form(dtype, softcap, reduction, weighted, ignore, chunk_rows=10):
    g = torch.Generator().manual_seed(2)
    hidden = (torch.randn(N, D, generator=g)).to(dtype)
    weight = (torch.randn(V, D, generator=g) * 0.5).to(dtype)
    _, targets, weights = make_inputs(torch.float32, ignore=ignore, weighted=weighted)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss = linear_softcapped_cross_entropy(h, w, targets, weights, softcap, reduction=reduction, chunk_rows=chunk_rows)
    upstream = torch.randn(loss.shape, generator=torch.Generator().manual_seed(3))
    (loss * upstream).sum().backward()

    rh, rw = hidden.double().requires_grad_(), weight.double().requires_grad_()
    # The op sees each chunk's logits as a GEMM in the input dtype produced them: rounded to it.
    ref = reference_softcapped_ce((rh @ rw.T).to(dtype).double(), targets, weights, softcap, reduction=reduction)
    (ref * upstream.double()).sum().backward()

    def close(got, want):
        if dtype == torch.float32:
            torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)
        else:  # half-precision GEMMs and stored gradients: relative to the largest entry
            torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-2 * max(want.abs().max().item(), 1e-3))

    close(loss.detach(), ref.detach())
    for got, want in ((h.grad, rh.grad), (w.grad, rw.grad)):
        assert got.dtype == dtype
        close(got, want)


GRID = list(itertools.product([torch.float32, torch.float16, torch.bfloat16], [30.0, 2.5], ["mean", "sum", "none"],
                              [True, False], [True, False]))


def grid_id(case):
    dtype, c, red, weighted, ignore = case
    return f"{str(dtype)[6:]}-c{c}-{red}-{'w' if weighted else 'nw'}-{'ig' if ignore else 'noig'}"
