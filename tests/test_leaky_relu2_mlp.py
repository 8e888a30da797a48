"""pgolf::leaky_relu2_mlp on its torch path (any CPU). The same cases run against the
Triton kernel in tests/interp (interpreter tier)."""
import pytest
import torch
import torch.nn.functional as F

from mlp_cases import GRID, check_against_reference, grid_id, make_inputs
from pgolf.ops.leaky_relu2_mlp import leaky_relu2_mlp_backward_op, leaky_relu2_mlp_op, leaky_relu_squared_mlp


@pytest.mark.parametrize("case", GRID, ids=[grid_id(c) for c in GRID])
def test_matches_fp64_reference(case):
    check_against_reference(*case)


def test_leading_dims_and_a_single_row():
    check_against_reference(torch.float32, 0.5, lead=(3, 5))
    check_against_reference(torch.bfloat16, 0.5, lead=(1,))


def test_slope_zero_is_the_relu_squared_mlp():
    x, w_up, w_down, _ = make_inputs(torch.float32)
    eager = F.linear(torch.relu(F.linear(x, w_up)).square(), w_down)
    torch.testing.assert_close(leaky_relu_squared_mlp(x, w_up, w_down, 0.0), eager)


def test_no_activations_kept_without_a_gradient():
    x, w_up, w_down, _ = make_inputs(torch.float32)
    with torch.no_grad():
        out, pre, post = leaky_relu2_mlp_op(x, w_up, w_down, 0.5, False)
    assert pre.numel() == 0 and post.numel() == 0
    with torch.no_grad():
        torch.testing.assert_close(leaky_relu_squared_mlp(x, w_up, w_down), out)


def test_zero_rows():
    _, w_up, w_down, _ = make_inputs(torch.float32)
    x = torch.zeros(0, w_up.shape[1], requires_grad=True)
    out = leaky_relu_squared_mlp(x, w_up, w_down)
    out.sum().backward()
    assert out.shape == (0, w_up.shape[1]) and x.grad.shape == x.shape


def test_opcheck():
    x, w_up, w_down, _ = make_inputs(torch.float32)
    args = [t.clone().requires_grad_() for t in (x, w_up, w_down)]
    torch.library.opcheck(leaky_relu2_mlp_op, (*args, 0.5, True))
    torch.library.opcheck(leaky_relu2_mlp_op, (x, w_up, w_down, 0.5, False))
    _, pre, post = leaky_relu2_mlp_op(x, w_up, w_down, 0.5, True)
    torch.library.opcheck(leaky_relu2_mlp_backward_op, (torch.randn_like(x), x, w_up, w_down, pre, post, 0.5))


def test_fp64_gradcheck():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w_up = torch.randn(11, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w_down = torch.randn(6, 11, generator=g, dtype=torch.float64, requires_grad=True)
    for slope in (0.5, 0.0):
        assert torch.autograd.gradcheck(lambda *t: leaky_relu_squared_mlp(*t, slope), (x, w_up, w_down))


def test_compiled_equals_eager():
    x, w_up, w_down, upstream = make_inputs(torch.float32)

    def f(x, w_up, w_down):
        return (leaky_relu_squared_mlp(x, w_up, w_down, 0.5) * upstream).sum()

    args = [t.clone().requires_grad_() for t in (x, w_up, w_down)]
    eager = f(*args)
    eager_grads = torch.autograd.grad(eager, args)
    cargs = [t.clone().requires_grad_() for t in (x, w_up, w_down)]
    compiled = torch.compile(f, fullgraph=True)(*cargs)
    compiled_grads = torch.autograd.grad(compiled, cargs)
    torch.testing.assert_close(compiled, eager)
    for a, b in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("change, message", [
    (dict(w_up=torch.zeros(72, 39)), "needs w_up"),
    (dict(w_down=torch.zeros(72, 40)), "needs w_up"),
    (dict(w_up=torch.zeros(72)), "must be 2-D"),
    (dict(negative_slope=float("nan")), "finite"),
    (dict(x=torch.zeros(3, 40, dtype=torch.int64)), "bf16, fp16, fp32 or fp64"),
])
def test_bad_arguments(change, message):
    x, w_up, w_down, _ = make_inputs(torch.float32)
    args = dict(x=x, w_up=w_up, w_down=w_down, negative_slope=0.5) | change
    with pytest.raises(ValueError, match=message):
        leaky_relu_squared_mlp(**args)
