"""AWQ-lite inside GPTQ (frontier F7.1) and LQER's two factor packings (spec §5.11, F7.3), against
small references written out here from the spec's words."""
import numpy as np
import pytest
import torch

from pgolf.config import ExportConfig, load_config
from pgolf.errors import PgolfError
from pgolf.eval.packed import PackedLinear
from pgolf.export.artifact import Artifact, decode_artifact, encode_artifact
from pgolf.model.roles import Role, matrix
from pgolf.ops.quantize import sdclip_scale
from pgolf.quant.awq import group_scores, select_groups
from pgolf.quant.encoding import Encoded, check_encoded, decode
from pgolf.quant.gptq import gptq_codes
from pgolf.quant.lqer import lqer_correction, lqer_parts
from pgolf.quant.recipe import quantize_state

# -- LQER ---------------------------------------------------------------------------------


def svd_factors(e, rank):
    u, s, vh = torch.linalg.svd(e.double(), full_matrices=False)
    return u[:, :rank] * s[:rank], vh[:rank]


def reference_asym(e, rank, group):
    """Spec §5.11 / F7.3 element by element: A int2 {-2..1}, s_A = max|A|/1.5 (one);
    B int4 [-8, 7], s = max|group|/7.5 per `group` consecutive elements of flattened B."""
    a, b = svd_factors(e, rank)
    sa = np.float16(float(a.abs().max()) / 1.5)
    qa = np.array([[min(max(round(float(v) / float(sa)), -2), 1) for v in row] for row in a])
    flat = b.reshape(-1).tolist()
    qb, sb = [], []
    for i in range(0, len(flat), group):
        s = np.float16(max(abs(v) for v in flat[i:i + group]) / 7.5)
        sb.append(s)
        qb += [min(max(round(v / float(s)), -8), 7) for v in flat[i:i + group]]
    return qa, np.array([sa]), np.array(qb), np.array(sb)


def reference_sym(e, rank, bits):
    """The records' symmetric form: both factors int`bits`, codes in ±R, an fp16 scale per row."""
    r = 2 ** (bits - 1) - 1
    out = []
    for f in svd_factors(e, rank):
        s = np.array([np.float16(float(row.abs().max()) / r) for row in f])
        q = np.array([[min(max(round(float(v) / float(si)), -r), r) for v in row] for row, si in zip(f, s)])
        out += [q, s]
    return out[0], out[1], out[2].reshape(-1), out[3]


def low_rank_error(rows=16, cols=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, 6, generator=g, dtype=torch.float64) @ torch.randn(6, cols, generator=g, dtype=torch.float64)
            + 0.05 * torch.randn(rows, cols, generator=g, dtype=torch.float64))


def assert_parts(parts, ref):
    qa, sa, qb, sb = ref
    assert np.array_equal(parts["lqer_a"], qa) and np.array_equal(parts["lqer_b"], qb)
    assert np.array_equal(parts["lqer_a_scale"], sa.astype(np.float16))
    assert np.array_equal(parts["lqer_b_scale"], sb.astype(np.float16))


@pytest.mark.parametrize("group", [32, 64])
def test_lqer_asymmetric_groups_match_the_spec(group):
    e = low_rank_error()  # rank 4 x 48 cols = 192 elements: 6 groups of 32, 3 of 64
    parts = lqer_parts(e, 4, asym_group=group)
    assert parts["lqer_b_scale"].shape == (4 * 48 // group,) and parts["lqer_a_scale"].shape == (1,)
    assert_parts(parts, reference_asym(e, 4, group))
    torch.testing.assert_close(lqer_correction(parts, (16, 48)).double(), reference_decode(parts, 16, 48),
                               rtol=1e-5, atol=1e-6)  # fp32 decode against fp64


def reference_decode(parts, rows, cols):
    qa, sa = parts["lqer_a"].astype(np.float64), parts["lqer_a_scale"].astype(np.float64)
    a = qa * (sa[0] if sa.size == 1 else sa[:, None])
    sb = parts["lqer_b_scale"].astype(np.float64)
    g = parts["lqer_b"].size // sb.size
    b = np.array([parts["lqer_b"][i] * sb[i // g] for i in range(parts["lqer_b"].size)]).reshape(-1, cols)
    return torch.from_numpy(a @ b)


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_lqer_symmetric_form_and_its_fallback(bits):
    e = low_rank_error()
    parts = lqer_parts(e, 4, asym_group=0, factor_bits=bits)
    assert parts["lqer_a_scale"].shape == (16,) and parts["lqer_b_scale"].shape == (4,)  # per row of A and of B
    assert_parts(parts, reference_sym(e, 4, bits))
    torch.testing.assert_close(lqer_correction(parts, (16, 48)).double(), reference_decode(parts, 16, 48),
                               rtol=1e-5, atol=1e-6)  # fp32 decode against fp64
    # the asymmetric packing falls back to this form where rank x cols does not divide into groups
    assert_parts(lqer_parts(e, 4, asym_group=128, factor_bits=bits), reference_sym(e, 4, bits))


def test_lqer_finer_groups_and_more_bits_fit_better():
    e = low_rank_error(64, 256, seed=3)
    err = lambda p: float((e - lqer_correction(p, (64, 256)).double()).norm() / e.norm())
    g64, g32, sym8 = err(lqer_parts(e, 4, 64)), err(lqer_parts(e, 4, 32)), err(lqer_parts(e, 4, 0, 8))
    assert sym8 < g32 <= g64 < 1.0, (sym8, g32, g64)


def coded_roles():
    return {"tok_emb.weight": Role("embedding", group="tok_emb", hot=True, tied=True),
            "blocks.0.mlp.fc.weight": matrix("mlp.fc", "mlp"), "blocks.0.mlp.proj.weight": matrix("mlp.proj", "mlp")}


def coded_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"tok_emb.weight": torch.randn(512, 192, generator=g) * 0.05,
            "blocks.0.mlp.fc.weight": torch.randn(768, 192, generator=g) * 0.05,
            "blocks.0.mlp.proj.weight": torch.randn(192, 768, generator=g) * 0.05}


@pytest.mark.parametrize("group, bits", [(32, 4), (0, 4), (0, 6)])
def test_lqer_packings_round_trip_through_the_artifact(group, bits):
    cfg = ExportConfig(method="rtn", matrix_bits=6, embed_bits=7, lqer_top=3, lqer_asym_group=group,
                       lqer_factor_bits=bits)
    enc = quantize_state(coded_state(), cfg, coded_roles())
    assert all(e.has_lqer for e in enc.values())
    for layout in ("plain", "grouped"):
        blob, _ = encode_artifact(Artifact({}, enc, {}, coded_roles()), layout, "zlib")
        back = decode_artifact(blob).tensors
        for name, e in enc.items():
            assert torch.equal(decode(back[name]), decode(e)), name


def test_malformed_lqer_groups_are_rejected():
    parts = {"q": np.zeros((4, 8), np.int8), "scale": np.ones(4, np.float16), "lqer_a": np.zeros((4, 2), np.int8),
             "lqer_a_scale": np.ones(1, np.float16), "lqer_b": np.zeros(16, np.int8)}
    check_encoded("t", Encoded("int_row", "float32", (4, 8), {**parts, "lqer_b_scale": np.ones(4, np.float16)}, 6))
    for bad in (np.ones(3, np.float16), np.ones(32, np.float16)):  # groups that do not tile B's 16 elements
        with pytest.raises(ValueError, match="lqer_b_scale"):
            check_encoded("t", Encoded("int_row", "float32", (4, 8), {**parts, "lqer_b_scale": bad}, 6))
    with pytest.raises(ValueError, match="lqer_a_scale"):
        check_encoded("t", Encoded("int_row", "float32", (4, 8), {**parts, "lqer_a_scale": np.ones(3, np.float16),
                                                                   "lqer_b_scale": np.ones(4, np.float16)}, 6))


# -- AWQ-lite ---------------------------------------------------------------------------------


def test_group_scores_are_rms_times_mean_abs_weight_summed_per_group():
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(5, 10, generator=g), torch.randn(40, 10, generator=g)
    h = x.T @ x / 40
    rms = [float((x[:, c] ** 2).mean().sqrt()) for c in range(10)]
    s = [rms[c] * float(w[:, c].abs().mean()) for c in range(10)]
    expect = [sum(s[0:4]), sum(s[4:8])]  # whole groups only: columns 8, 9 form none
    torch.testing.assert_close(group_scores(w, h, 4), torch.tensor(expect, dtype=torch.float64))


def test_groups_are_chosen_over_all_tensors_together():
    eye = lambda n: torch.eye(n)
    w = {"a": torch.ones(2, 8), "b": torch.ones(2, 8)}
    w["b"][:, 4:8] = 3.0  # b's second group is the most salient, a's groups tie for second place
    assert select_groups(w, {"a": eye(8), "b": eye(8)}, 4, 1) == {"b": [4]}
    assert select_groups(w, {"a": eye(8), "b": eye(8)}, 4, 2) == {"a": [0], "b": [4]}
    assert select_groups(w, {"a": eye(8), "b": eye(8)}, 4, 4) == {"a": [0, 4], "b": [0, 4]}


def outlier_problem(rows=64, cols=256, n=4096, seed=0):
    """Weights, and a Hessian whose columns 128..191 are correlated, 8x larger activations."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cols, generator=g, dtype=torch.float64)
    shared = torch.randn(n, 1, generator=g, dtype=torch.float64)
    x[:, 128:192] = 8.0 * (0.8 * shared + 0.6 * x[:, 128:192])
    w = torch.randn(rows, cols, generator=g, dtype=torch.float64) * 0.02
    return w.float(), (x.T @ x / n).float()


def output_error(w, w_hat, h):
    d = (w - w_hat).double()
    return float(torch.einsum("ij,jk,ik->", d, h.double(), d))


def test_awq_lite_lowers_the_hessian_weighted_error_of_gptq():
    w, h = outlier_problem()
    assert select_groups({"w": w}, {"w": h}, 64, 1) == {"w": [128]}  # the outlier group is the salient one
    k = 12.85
    scale, hi_scale = sdclip_scale(w, 6, k).float(), sdclip_scale(w, 8, k).float()
    plain = gptq_codes(w, h, scale, 6).float() * scale[:, None]
    mask = torch.zeros(256, dtype=torch.bool)
    mask[128:192] = True
    codes = gptq_codes(w, h, scale, 6, hi_cols=mask, hi_scale=hi_scale, hi_bits=8)
    assert codes[:, ~mask].abs().max() <= 31 and codes[:, mask].abs().max() > 31  # really 8-bit there
    mixed = torch.where(mask, codes.float() * hi_scale[:, None], codes.float() * scale[:, None])
    e_plain, e_awq = output_error(w, plain, h), output_error(w, mixed, h)
    assert e_awq < 0.5 * e_plain, (e_awq, e_plain)  # measured: 0.16 of plain GPTQ's error here


def test_gptq_with_an_empty_protected_set_is_plain_gptq():
    w, h = outlier_problem(rows=16, cols=128)
    scale = sdclip_scale(w, 6, 12.0).float()
    none = torch.zeros(128, dtype=torch.bool)
    assert torch.equal(gptq_codes(w, h, scale, 6), gptq_codes(w, h, scale, 6, hi_cols=none, hi_scale=scale))


def awq_export(**kw):
    return ExportConfig(method="gptq", matrix_bits=6, embed_bits=7, awq_lite=True, awq_group_size=64, **kw)


def outlier_hessians(state):
    out = {}
    for name, t in state.items():
        _, h = outlier_problem(rows=4, cols=t.shape[1], n=512, seed=len(name))
        out[name] = h
    out["blocks.0.mlp.proj.weight"] = out["blocks.0.mlp.proj.weight"] * 4.0  # its group wins
    return out


def test_awq_lite_artifact_round_trips_and_its_bytes_are_counted():
    state, roles = coded_state(), coded_roles()
    hessians = outlier_hessians(state)
    plain = quantize_state(state, ExportConfig(method="gptq", matrix_bits=6, embed_bits=7), roles, hessians)
    enc = quantize_state(state, awq_export(awq_group_top_k=2, lqer_top=1), roles, hessians)
    awq = {n: e for n, e in enc.items() if e.has_awq}
    assert len(awq) == 2 and "blocks.0.mlp.proj.weight" in awq  # the two outlier groups, over all tensors
    for e in awq.values():
        assert e.parts["awq_start"].tolist() == [128] and e.parts["awq_q"].shape == (e.shape[0], 64)
        assert np.all(e.parts["q"][:, 128:192] == 0) and np.abs(e.parts["q"]).max() <= (1 << (e.bits - 1)) - 1
    w, h = state["blocks.0.mlp.proj.weight"], hessians["blocks.0.mlp.proj.weight"]
    without_lqer = quantize_state(state, awq_export(awq_group_top_k=2), roles, hessians)["blocks.0.mlp.proj.weight"]
    assert output_error(w, decode(without_lqer), h) < output_error(w, decode(plain["blocks.0.mlp.proj.weight"]), h)
    sizes = {}
    for layout in ("plain", "grouped"):
        blob, _ = encode_artifact(Artifact({}, enc, {}, roles), layout, "zlib")
        back = decode_artifact(blob).tensors
        for name, x in enc.items():
            assert torch.equal(decode(back[name]), decode(x)), name
        sizes[layout] = len(blob) - len(encode_artifact(Artifact({}, plain, {}, roles), layout, "zlib")[0])
    assert all(0 < d for d in sizes.values()), sizes  # the wider codes and their row scales cost bytes


def test_packed_linear_adds_the_awq_groups():
    state, roles = coded_state(), coded_roles()
    enc = quantize_state(state, awq_export(awq_group_top_k=2), roles, outlier_hessians(state))
    e = enc["blocks.0.mlp.proj.weight"]
    x = torch.randn(3, 768, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(PackedLinear(e, torch.device("cpu"))(x), x @ decode(e).float().T, rtol=1e-4, atol=1e-5)


def test_malformed_awq_groups_are_rejected():
    base = {"q": np.zeros((4, 16), np.int8), "scale": np.ones(4, np.float16), "awq_q": np.zeros((4, 8), np.int8),
            "awq_scale": np.ones(4, np.float16)}
    check_encoded("t", Encoded("int_row", "float32", (4, 16), {**base, "awq_start": np.array([0, 8], np.int32)}, 6))
    for starts in ([0, 2], [8, 0], [12, 16], [-4, 8], [0, 4, 8]):  # overlap, unordered, outside, 8 codes for 3
        with pytest.raises(ValueError, match="awq_start"):
            check_encoded("t", Encoded("int_row", "float32", (4, 16), {**base, "awq_start": np.array(starts, np.int32)}, 6))
    with pytest.raises(ValueError, match="incomplete AWQ"):
        check_encoded("t", Encoded("int_row", "float32", (4, 16), {**base}, 6))
    with pytest.raises(ValueError, match="AWQ codes"):
        check_encoded("t", Encoded("int_row", "float32", (4, 16), {**base, "awq_start": np.array([0, 8], np.int32),
                                                                    "awq_q": np.full((4, 8), -128, np.int8)}, 6))


def test_awq_lite_needs_gptq():
    with pytest.raises(PgolfError, match="awq_lite=true needs export.method=gptq"):
        load_config("smoke", ["export.awq_lite=true", "export.method=rtn"], env={})
