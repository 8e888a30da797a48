"""The symmetric Gram kernel and the Newton-Schulz op built on it, under the interpreter."""
import pytest
import torch

from pgolf.ops.backend import kernel_module
from test_newton_schulz import conditioned
from pgolf.ops.newton_schulz import normalized_input, coefficient_schedule, newton_schulz
from pgolf.ops.reference import newton_schulz_reference


@pytest.mark.parametrize("shape", [(3, 37, 53), (1, 16, 16), (2, 20, 7)], ids=str)
def test_sym_gram_matches_torch(shape):
    k = kernel_module("newton_schulz")
    g = torch.Generator().manual_seed(0)
    y = torch.randn(*shape, generator=g).bfloat16()
    got = k.sym_gram(y)
    want = y.float() @ y.float().mT
    assert got.dtype == torch.bfloat16 and torch.equal(got, got.mT)  # written symmetric, tile by tile
    torch.testing.assert_close(got.float(), want, rtol=2 ** -7, atol=1e-2)  # bf16 output (truncated here)

    z = want.bfloat16()
    got = k.sym_gram(z, alpha=0.5, z=z, beta=-2.0)
    want = 0.5 * (z.float() @ z.float().mT) - 2.0 * z.float()
    torch.testing.assert_close(got.float(), want, rtol=2 ** -7, atol=0.05 * want.abs().max().item() * 2 ** -6)


def truncate_bf16(t):
    """fp32 -> bf16 as the interpreter stores it: truncating, not rounding."""
    return (t.float().view(torch.int32) & ~0xFFFF).view(torch.float32).bfloat16()


def interpreter_emulation(x, coefficients):
    """The op's arithmetic with the interpreter's truncating stores, in plain torch."""
    y = normalized_input(x, 1.0, 1e-7, torch.bfloat16)
    for a, b, c in coefficients:
        gram = truncate_bf16(y.float() @ y.float().mT)
        poly = truncate_bf16(c * (gram.float() @ gram.float().mT) + b * gram.float())
        y = torch.baddbmm(y, poly, y, beta=a)
    return y


@pytest.mark.parametrize("name", ["classic", "polar_express"])
def test_newton_schulz_with_the_kernels(name):
    x = conditioned((3, 37, 53)).float()
    coefficients = coefficient_schedule(name, 5)
    out = newton_schulz(x, 5, name)
    # The kernels do exactly the op's arithmetic (up to fp32 summation order) ...
    torch.testing.assert_close(out.float(), interpreter_emulation(x, coefficients).float(), rtol=2 ** -7, atol=1e-3)
    # ... and land where the fp64 iteration does, within what truncating bf16 stores allow
    # (Polar Express's large first coefficients amplify them: the GPU rounds instead).
    ref = newton_schulz_reference(x.double(), coefficients)
    assert (torch.linalg.svdvals(out.double()) - torch.linalg.svdvals(ref)).abs().max() < 0.08
    tall = newton_schulz(x.mT.contiguous(), 5, name)  # tall input: transposed inside
    torch.testing.assert_close(tall, out.mT)
