"""pgolf::newton_schulz on its torch path, against the fp64 reference."""
import pytest
import torch

from pgolf.ops.newton_schulz import coefficient_schedule, newton_schulz, newton_schulz_op
from pgolf.ops.reference import newton_schulz_reference

SHAPES = [(3, 37, 53), (3, 53, 37), (2, 64, 64)]  # wide, tall (transposed inside), square


def conditioned(shape, cond=25.0, seed=0):
    """A bank whose matrices have singular values spread over [1/cond, 1] (as gradients are)."""
    g = torch.Generator().manual_seed(seed)
    u, _, vh = torch.linalg.svd(torch.randn(*shape, generator=g, dtype=torch.float64), full_matrices=False)
    s = torch.logspace(0, -torch.log10(torch.tensor(cond)).item(), shape[-1] if shape[-1] < shape[-2] else shape[-2],
                       dtype=torch.float64)
    return u @ torch.diag_embed(s.expand(shape[0], -1)) @ vh


def promised_band(coefficients, lo, hi, n=4001):
    """Where the scalar iteration sends normalised singular values in [lo, hi]: the band the
    coefficients promise (Newton-Schulz acts on each singular value independently)."""
    s = torch.linspace(lo, hi, n, dtype=torch.float64)
    for a, b, c in coefficients:
        s = a * s + b * s ** 3 + c * s ** 5
    return float(s.min()), float(s.max())


@pytest.mark.parametrize("name", ["classic", "polar_express"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_fp64_reference_and_stays_in_the_promised_band(name, shape):
    x = conditioned(shape)
    coeffs = coefficient_schedule(name, 5)
    out = newton_schulz(x.float(), 5, name)
    ref = newton_schulz_reference(x, coeffs)
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    # orthogonality: the op's singular values follow the fp64 iteration's, within bf16 error
    s_out = torch.linalg.svdvals(out.double())
    s_ref = torch.linalg.svdvals(ref)
    assert (s_out - s_ref).abs().max() < 0.03, (s_out - s_ref).abs().max()
    assert (out.double() - ref).abs().max() < 0.03
    s_in = torch.linalg.svdvals(x / torch.linalg.matrix_norm(x, keepdim=True))
    lo, hi = promised_band(coeffs, float(s_in.min()), float(s_in.max()))
    assert lo - 0.03 <= float(s_out.min()) and float(s_out.max()) <= hi + 0.03, (lo, hi, s_out.aminmax())


def test_polar_express_gets_closer_to_orthogonal_than_classic():
    x = conditioned((2, 48, 96), cond=100.0)
    errors = {}
    for name in ("classic", "polar_express"):
        s = torch.linalg.svdvals(newton_schulz(x.float(), 5, name).double())
        errors[name] = float((s - 1).abs().max())
    assert errors["polar_express"] < errors["classic"], errors


def test_norm_scale_and_degenerate_inputs():
    x = conditioned((1, 16, 32))
    assert not torch.equal(newton_schulz(x, norm_scale=1.0), newton_schulz(x, norm_scale=1.02))
    zero = newton_schulz(torch.zeros(2, 8, 12))
    assert torch.equal(zero, torch.zeros_like(zero))
    rank_one = newton_schulz(torch.outer(torch.randn(16), torch.randn(8)))
    assert torch.isfinite(rank_one).all() and rank_one.shape == (16, 8)


def test_schedule():
    assert coefficient_schedule("classic", 3) == [(3.4445, -4.7750, 2.0315)] * 3
    pe = coefficient_schedule("polar_express", 7)
    assert pe[0][0] == 8.156554524902461 and pe[5] == pe[6] == pe[4]
    with pytest.raises(ValueError, match="coefficients must be one of"):
        coefficient_schedule("you", 5)


def test_opcheck_and_compiled_equals_eager():
    x = conditioned((3, 37, 53)).float()
    flat = [v for abc in coefficient_schedule("polar_express", 5) for v in abc]
    torch.library.opcheck(newton_schulz_op, (x, flat, 1.0, 1e-7), test_utils=("test_schema", "test_faketensor",
                                                                               "test_aot_dispatch_dynamic"))
    compiled = torch.compile(lambda t: newton_schulz(t, 5, "polar_express"), fullgraph=True)
    assert torch.equal(compiled(x), newton_schulz(x, 5, "polar_express"))
