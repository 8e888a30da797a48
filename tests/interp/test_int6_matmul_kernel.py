"""The int6 dequant-matmul Triton kernel under the interpreter."""
import pytest
import torch

from pgolf.ops.int6_matmul import int6_matmul
from int6_cases import exact, problem


@pytest.mark.parametrize("m, n, k", [(1, 37, 53), (17, 21, 64), (5, 16, 3)], ids=str)
def test_kernel_matches_the_exact_product(m, n, k):
    x, codes, packed, scales = problem(m, n, k)
    torch.testing.assert_close(int6_matmul(x, packed, scales, k).double(), exact(x, codes, scales), rtol=1e-5, atol=1e-5)


def test_bf16_activations():
    x, codes, packed, scales = problem(4, dtype=torch.bfloat16)
    y = int6_matmul(x, packed, scales, 53)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.double(), exact(x, codes, scales), rtol=2e-2, atol=2e-2)  # bf16 out, truncated here
