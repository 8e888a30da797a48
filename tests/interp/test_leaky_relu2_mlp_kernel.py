"""The LeakyReLU² MLP's Triton GEMMs under the interpreter, against the fp64 reference."""
import pytest
import torch

from mlp_cases import check_against_reference, grid_id, make_inputs
from pgolf.ops.leaky_relu2_mlp import leaky_relu2_mlp_op, leaky_relu_squared_mlp

# The interpreter is slow and truncates bf16 stores (ulp-level), which TOL allows. fp32 and
# bf16 take the kernel's fp32-dot branch; fp16 the native tl.dot branch that bf16 takes on a GPU.
CASES = [(torch.float32, 0.5), (torch.float32, 0.0), (torch.float16, 0.5), (torch.bfloat16, 0.5),
         (torch.bfloat16, 0.2)]


@pytest.mark.parametrize("case", CASES, ids=[grid_id(c) for c in CASES])
def test_matches_fp64_reference(case):
    check_against_reference(*case)


def test_more_than_one_tile_group_and_strided_weights():
    """Enough row blocks for two GROUP_M groups and a ragged last group; W_down is read
    through its transpose's strides by the backward kernel."""
    check_against_reference(torch.float32, 0.5, lead=(5, 17))
    check_against_reference(torch.float16, 0.5, lead=(5, 17))


def test_opcheck_under_the_interpreter():
    x, w_up, w_down, _ = make_inputs(torch.float32)
    args = [t.clone().requires_grad_() for t in (x, w_up, w_down)]
    torch.library.opcheck(leaky_relu2_mlp_op, (*args, 0.5, True))


def test_compiled_equals_eager_under_the_interpreter():
    x, w_up, w_down, upstream = make_inputs(torch.float32)

    def f(x, w_up, w_down):
        return (leaky_relu_squared_mlp(x, w_up, w_down, 0.5) * upstream).sum()

    args = [t.clone().requires_grad_() for t in (x, w_up, w_down)]
    eager = f(*args)
    eager.backward()
    cargs = [t.clone().requires_grad_() for t in (x, w_up, w_down)]
    compiled = torch.compile(f, fullgraph=True)(*cargs)
    compiled.backward()
    torch.testing.assert_close(compiled, eager)
    for a, b in zip(cargs, args, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


def test_the_gradient_free_forward_stores_no_pre_and_agrees():
    x, w_up, w_down, _ = make_inputs(torch.bfloat16)
    with torch.no_grad():
        out, pre, post = leaky_relu2_mlp_op(x, w_up.bfloat16(), w_down.bfloat16(), 0.5, False)
    assert pre.numel() == 0 and post.numel() == 0
    with_grad, _, _ = leaky_relu2_mlp_op(x, w_up.bfloat16(), w_down.bfloat16(), 0.5, True)
    torch.testing.assert_close(out, with_grad, rtol=0, atol=0)
