"""The interpreter tier: Triton kernels executed on CPU tensors (TRITON_INTERPRET=1).

A fixture removes the ops' torch fallbacks, so a test here passes only if the Triton
kernel itself produced the numbers.
"""
import os

import pytest

assert os.environ.get("TRITON_INTERPRET") == "1", "run this directory with TRITON_INTERPRET=1"


@pytest.fixture(autouse=True)
def kernels_only(monkeypatch):
    from pgolf.ops import gdn, int6_matmul, leaky_relu2_mlp, newton_schulz, softcapped_ce

    def forbidden(*args, **kwargs):
        raise AssertionError("the torch fallback ran where the Triton kernel should have")

    for module, name in ((softcapped_ce, "_rows_forward_torch"), (softcapped_ce, "_rows_backward_torch"),
                         (newton_schulz, "_iterate_torch"), (int6_matmul, "int6_matmul_reference"),
                         (gdn, "_chunk_forward"), (gdn, "_chunk_backward"), (gdn, "_state_pass_torch"),
                         (gdn, "_state_pass_backward_torch"), (leaky_relu2_mlp, "_up_torch"),
                         (leaky_relu2_mlp, "_grad_pre_torch")):
        monkeypatch.setattr(module, name, forbidden)
