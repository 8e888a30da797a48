"""The softcapped-CE Triton kernel under the interpreter, against the fp64 reference."""
import pytest
import torch

from ce_cases import check_linear_form, check_logits_form, make_inputs
from pgolf.ops.reference import reference_softcapped_ce
from pgolf.ops.softcapped_ce import linear_softcapped_ce_op, softcapped_ce_op, softcapped_cross_entropy

# The interpreter is slow and truncates bf16 stores (ulp-level), which the tolerances allow.
CASES = [
    (torch.float32, 30.0, "mean", True, True),
    (torch.float32, 2.5, "none", False, True),
    (torch.float16, 30.0, "sum", True, False),
    (torch.bfloat16, 30.0, "mean", True, True),
    (torch.bfloat16, 5.0, "none", True, True),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_logits_form(case):
    check_logits_form(*case)


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3]], ids=str)
def test_linear_form(case):
    check_linear_form(*case)


def test_rows_longer_than_one_block():
    """V above the 8192-wide block: the online LSE must combine blocks."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 9001, generator=g) * 20).requires_grad_()
    t = torch.tensor([0, 9000, 4500])
    loss = softcapped_cross_entropy(x, t, reduction="sum")
    loss.backward()
    ref_x = x.detach().double().requires_grad_()
    ref = reference_softcapped_ce(ref_x, t, reduction="sum")
    ref.backward()
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.double(), ref_x.grad, rtol=1e-4, atol=1e-7)


def test_opcheck_under_the_interpreter():
    logits, targets, weights = make_inputs(torch.float32)
    torch.library.opcheck(softcapped_ce_op, (logits.requires_grad_(), targets, weights, 30.0, -100, "mean"))
    h, w = torch.randn(37, 48, requires_grad=True), torch.randn(1000, 48, requires_grad=True)
    torch.library.opcheck(linear_softcapped_ce_op, (h, w, targets, weights, 30.0, -100, "mean", 16, True))


def test_compiled_equals_eager_under_the_interpreter():
    logits, targets, weights = make_inputs(torch.float32)

    def f(x):
        return softcapped_cross_entropy(x, targets, weights, 30.0)

    x1, x2 = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    eager = f(x1)
    eager.backward()
    compiled = torch.compile(f, fullgraph=True)(x2)
    compiled.backward()
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(x2.grad, x1.grad)


def test_an_out_of_range_target_is_never_read_and_gives_nan():
    logits = torch.randn(3, 40)
    targets = torch.tensor([5, 40, -7])  # 40 and -7 are outside [0, 40) and not ignore_index
    loss = softcapped_cross_entropy(logits, targets, None, 30.0, reduction="none")
    assert torch.isfinite(loss[0]) and torch.isnan(loss[1:]).all()
