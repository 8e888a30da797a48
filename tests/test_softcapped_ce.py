"""pgolf::softcapped_ce and pgolf::linear_softcapped_ce on their torch path (any CPU).
The same cases run against the Triton kernels in tests/interp (interpreter tier)."""
import pytest
import torch

from ce_cases import GRID, check_linear_form, check_logits_form, grid_id, make_inputs
from pgolf.ops.softcapped_ce import (linear_softcapped_ce_op, linear_softcapped_cross_entropy, softcapped_ce_op,
                                     softcapped_cross_entropy)


@pytest.mark.parametrize("case", GRID, ids=[grid_id(c) for c in GRID])
def test_logits_form_matches_fp64_reference(case):
    check_logits_form(*case)


@pytest.mark.parametrize("case", [c for c in GRID if c[1] == 30.0], ids=[grid_id(c) for c in GRID if c[1] == 30.0])
def test_linear_form_matches_fp64_reference(case):
    check_linear_form(*case)


def test_opcheck():
    logits, targets, weights = make_inputs(torch.float32)
    for reduction in ("mean", "none"):
        torch.library.opcheck(softcapped_ce_op, (logits.requires_grad_(), targets, weights, 30.0, -100, reduction))
    h = torch.randn(37, 48, requires_grad=True)
    w = torch.randn(1000, 48, requires_grad=True)
    for reduction, in_forward in (("mean", True), ("sum", False), ("none", False)):
        torch.library.opcheck(linear_softcapped_ce_op, (h, w, targets, weights, 30.0, -100, reduction, 16, in_forward))


def test_fp64_gradcheck():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(7, 13, generator=g, dtype=torch.float64) * 5).requires_grad_()
    t = torch.tensor([0, 3, -100, 12, 5, 5, 1])
    w = torch.rand(7, generator=g, dtype=torch.float64)
    for reduction in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(lambda x: softcapped_cross_entropy(x, t, w, 4.0, reduction=reduction), (x,))
    h = torch.randn(7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(13, 5, generator=g, dtype=torch.float64, requires_grad=True)
    for reduction in ("mean", "none"):
        assert torch.autograd.gradcheck(
            lambda h, wt: linear_softcapped_cross_entropy(h, wt, t, w, 4.0, reduction=reduction, chunk_rows=3), (h, wt))


def test_compiled_equals_eager():
    logits, targets, weights = make_inputs(torch.float32)
    h, w = torch.randn(37, 48), torch.randn(1000, 48)

    def f(x, h, w):
        return (softcapped_cross_entropy(x, targets, weights, 30.0)
                + linear_softcapped_cross_entropy(h, w, targets, weights, 30.0, chunk_rows=16))

    args = [t.clone().requires_grad_() for t in (logits, h, w)]
    eager = f(*args)
    eager_grads = torch.autograd.grad(eager, args)
    cargs = [t.clone().requires_grad_() for t in (logits, h, w)]
    compiled = torch.compile(f, fullgraph=True)(*cargs)
    compiled_grads = torch.autograd.grad(compiled, cargs)
    torch.testing.assert_close(compiled, eager)
    for a, b in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(a, b)


def test_matches_torch_cross_entropy_without_softcap_effect():
    # With a huge cap, softcap is the identity: plain F.cross_entropy semantics, ignore_index included.
    logits, targets, _ = make_inputs(torch.float32, scale=1.0)
    got = softcapped_cross_entropy(logits, targets, softcap=1e6)
    torch.testing.assert_close(got, torch.nn.functional.cross_entropy(logits, targets), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(targets=torch.zeros(5, dtype=torch.long)), "targets must have shape"),
    (dict(weights=torch.ones(3)), "weights must have shape"),
    (dict(softcap=0.0), "softcap must be positive"),
    (dict(reduction="avg"), "reduction must be one of"),
    (dict(targets=torch.zeros(37)), "targets must be int64"),
])
def test_bad_arguments(kwargs, message):
    logits, targets, _ = make_inputs(torch.float32)
    args = dict(logits=logits, targets=targets) | kwargs
    with pytest.raises(ValueError, match=message):
        softcapped_cross_entropy(**args)
