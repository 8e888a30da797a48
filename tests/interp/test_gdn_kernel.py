"""The GDN chunked-scan Triton kernels (per-chunk WY/output and the state pass) under the interpreter."""
import pytest
import torch

from gdn_cases import assert_matches_truth, problem
from pgolf.ops.gdn import gdn_chunk_scan
from pgolf.ops.reference import gdn_recurrent_reference


@pytest.mark.parametrize("shape", [dict(b=2, t=37, h=2, k=12, v=20), dict(b=1, t=16, h=1, k=16, v=16)], ids=str)
def test_kernels_match_the_recurrence_forward_and_backward(shape):
    xs, s0 = problem(**shape)
    assert_matches_truth(xs, s0, chunk_size=16)


def test_the_production_shape():
    """C = 64, K = V = 64 (the GDN record's heads), two heads, a ragged last chunk."""
    xs, s0 = problem(b=1, t=130, h=2, k=64, v=64)
    assert_matches_truth(xs, s0, chunk_size=64)


def test_varlen_with_an_empty_document():
    xs, _ = problem(b=1, t=50, h=2, k=16, v=16)
    assert_matches_truth(xs, None, cu_seqlens=torch.tensor([0, 5, 5, 38, 50]), chunk_size=16)


def test_chunk_size_invariance():
    xs, s0 = problem(b=1, t=70, h=1, k=16, v=16)
    o16, f16 = gdn_chunk_scan(*xs, initial_state=s0, chunk_size=16)
    o32, f32 = gdn_chunk_scan(*xs, initial_state=s0, chunk_size=32)
    torch.testing.assert_close(o16, o32, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(f16, f32, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["strong_decay", "parallel_keys"])
def test_extreme_gates_and_keys(case):
    (q, k, v, g, beta), s0 = problem(b=1, t=40, h=1, k=16, v=16)
    if case == "strong_decay":
        g = g * 60.0
    else:
        k, beta = k[:, :1].expand_as(k).contiguous(), torch.ones_like(beta)
    assert_matches_truth([q, k, v, g, beta], s0, fwd=1e-5, bwd=1e-4, chunk_size=16)


def test_bf16_io():
    xs, s0 = problem(b=1, t=33, h=2, k=16, v=16)
    o, final = gdn_chunk_scan(*[x.bfloat16() for x in xs], initial_state=s0, chunk_size=16)
    assert o.dtype == torch.bfloat16 and final.dtype == torch.float32
    o_ref, _ = gdn_recurrent_reference(*[x.double() for x in xs], initial_state=s0.double())
    torch.testing.assert_close(o.double(), o_ref, rtol=3e-2, atol=3e-2)  # bf16 stores truncate here


def test_small_chunks_are_refused():
    xs, _ = problem(b=1, t=8, h=1, k=16, v=16)
    with pytest.raises(ValueError, match="chunk size >= 16"):
        gdn_chunk_scan(*xs, chunk_size=8)
