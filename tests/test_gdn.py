"""pgolf::gdn_chunk_scan on its torch path: the chunked algebra against the token recurrence."""
import pytest
import torch

from gdn_cases import assert_matches_truth, cotangents_for, leaves, problem, run, truth
from pgolf.ops.gdn import gdn_chunk_scan, gdn_chunk_scan_op, gdn_state_pass_op
from pgolf.ops.reference import gdn_recurrent_reference


@pytest.mark.parametrize("chunk", [4, 16, 64])
@pytest.mark.parametrize("with_state", [False, True])
def test_fp64_forward_and_gradients_equal_the_recurrence(chunk, with_state):
    xs, s0 = problem(dtype=torch.float64)
    s0 = s0.double() if with_state else None
    cot = cotangents_for(xs, 2)
    o, final, grads = run(gdn_chunk_scan, xs, s0, [c.double() for c in cot], chunk_size=chunk)
    o_ref, final_ref, grads_ref = truth(xs, s0, cot)
    torch.testing.assert_close(o, o_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(final, final_ref, rtol=1e-10, atol=1e-10)
    for got, ref in zip(grads, grads_ref):
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)


def test_fp32_within_fla_tolerances():
    xs, s0 = problem(b=1, t=150, h=3, k=32, v=24)
    assert_matches_truth(xs, s0, fwd=1e-5, bwd=1e-5, chunk_size=64)


def test_gradcheck_fp64():
    xs, s0 = problem(b=1, t=9, h=1, k=3, v=2, dtype=torch.float64)
    s0 = s0.double().requires_grad_()
    fn = lambda q, k, v, g, beta, s: gdn_chunk_scan(q, k, v, g, beta, initial_state=s, chunk_size=4)
    torch.autograd.gradcheck(fn, (*leaves(xs), s0))


def test_chunk_size_does_not_change_the_result():
    xs, s0 = problem(t=100, dtype=torch.float64)
    results = [gdn_chunk_scan(*xs, initial_state=s0.double(), chunk_size=c) for c in (1, 8, 32, 128)]
    for o, final in results[1:]:
        torch.testing.assert_close(o, results[0][0], rtol=1e-11, atol=1e-11)
        torch.testing.assert_close(final, results[0][1], rtol=1e-11, atol=1e-11)


def _split(xs, cu):
    return [[x[:, lo:hi] for x in xs] for lo, hi in zip(cu[:-1].tolist(), cu[1:].tolist())]


def test_packed_varlen_equals_separate_sequences():
    xs, s0 = problem(b=1, t=70, dtype=torch.float64, n_seq=4)
    s0 = s0.double()
    cu = torch.tensor([0, 9, 9, 50, 70])  # an empty document too
    cot = cotangents_for(xs, 4)
    o, final, grads = run(gdn_chunk_scan, xs, s0, cot, cu_seqlens=cu, chunk_size=16)
    for i, (part, (lo, hi)) in enumerate(zip(_split(xs, cu), zip(cu[:-1].tolist(), cu[1:].tolist()))):
        cot_i = (cot[0][:, lo:hi], cot[1][i:i + 1])
        o_i, final_i, grads_i = run(gdn_chunk_scan, part, s0[i:i + 1], cot_i, chunk_size=16)
        torch.testing.assert_close(o[:, lo:hi], o_i, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(final[i:i + 1], final_i, rtol=1e-12, atol=1e-12)
        for got, ref in zip(grads[:5], grads_i[:5]):
            torch.testing.assert_close(got[:, lo:hi], ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grads[5][i:i + 1], grads_i[5], rtol=1e-12, atol=1e-12)


def test_nothing_crosses_a_document_boundary():
    xs, _ = problem(b=1, t=40, dtype=torch.float64)
    cu = torch.tensor([0, 23, 40])
    o, _ = gdn_chunk_scan(*xs, cu_seqlens=cu, chunk_size=16)
    changed = [x.clone() for x in xs]
    for x in changed:
        x[:, :23] = x[:, :23].flip(1) * 0.5  # rewrite the whole first document
    o2, _ = gdn_chunk_scan(*changed, cu_seqlens=cu, chunk_size=16)
    assert torch.equal(o[:, 23:], o2[:, 23:])
    assert not torch.allclose(o[:, :23], o2[:, :23])


def test_varlen_matches_the_recurrence():
    xs, _ = problem(b=1, t=61)
    assert_matches_truth(xs, None, cu_seqlens=torch.tensor([0, 1, 30, 61]), chunk_size=16)


@pytest.mark.parametrize("case", ["strong_decay", "parallel_keys", "no_decay"])
def test_extreme_gates_and_keys_stay_exact(case):
    xs, s0 = problem(b=1, t=80, h=2, k=8, v=8)
    q, k, v, g, beta = xs
    if case == "strong_decay":  # Γ underflows inside a chunk: only differences of γ may be exponentiated
        g = g * 60.0
    elif case == "parallel_keys":  # A's entries all near ±1: the triangular solve must not cancel
        k = k[:, :1].expand_as(k).contiguous()
        beta = torch.ones_like(beta)
    else:
        g = torch.zeros_like(g)
    assert_matches_truth([q, k, v, g, beta], s0, fwd=1e-5, bwd=1e-4, chunk_size=64)


def test_bf16_inputs_give_bf16_output_and_fp32_state():
    xs, s0 = problem(b=1, t=33)
    o, final = gdn_chunk_scan(*[x.bfloat16() for x in xs], initial_state=s0, chunk_size=16)
    assert o.dtype == torch.bfloat16 and final.dtype == torch.float32
    o_ref, _ = gdn_recurrent_reference(*[x.double() for x in xs], initial_state=s0.double())
    torch.testing.assert_close(o.double(), o_ref, rtol=3e-2, atol=3e-2)


def test_opcheck_and_compile():
    xs, s0 = problem(b=1, t=21, h=2, k=4, v=3, n_seq=2)
    args = (*leaves(xs), s0.clone().requires_grad_(), torch.tensor([0, 5, 21]), 0.5, 8)
    torch.library.opcheck(gdn_chunk_scan_op, args)
    torch.library.opcheck(gdn_chunk_scan_op, (*leaves(xs, torch.float64), None, None, 0.5, 4))
    cu = torch.tensor([0, 5, 21])
    eager = gdn_chunk_scan(*xs, cu_seqlens=cu, chunk_size=8)
    compiled = torch.compile(lambda *a: gdn_chunk_scan(*a, cu_seqlens=cu, chunk_size=8), fullgraph=True)(*xs)
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)


def test_state_pass_opcheck():
    n, c, h, k, v = 5, 4, 2, 3, 2
    gen = torch.Generator().manual_seed(0)
    w, kd = torch.randn(n, c, h, k, generator=gen), torch.randn(n, c, h, k, generator=gen)
    u, gamma = torch.randn(n, c, h, v, generator=gen), torch.rand(n, h, generator=gen)
    s0, starts = torch.randn(2, h, k, v, generator=gen), torch.tensor([0, 2, 5])
    torch.library.opcheck(gdn_state_pass_op, (*leaves([w, u, kd, gamma, s0]), starts))


@pytest.mark.parametrize("bad, message", [
    (dict(cu_seqlens=torch.tensor([1, 37])), "cu_seqlens"),
    (dict(cu_seqlens=torch.tensor([0, 20, 10, 37])), "cu_seqlens"),
    (dict(chunk_size=48), "power of two"),
    (dict(initial_state=torch.zeros(3, 2, 12, 20)), "initial_state"),
])
def test_bad_arguments_are_named(bad, message):
    xs, _ = problem(b=1)
    with pytest.raises(ValueError, match=message):
        gdn_chunk_scan(*xs, **bad)


def test_mismatched_shapes_are_rejected():
    (q, k, v, g, beta), _ = problem()
    with pytest.raises(ValueError, match="expected q, k"):
        gdn_chunk_scan(q, k[:, :-1], v, g, beta)


def test_kernel_launch_options_reject_bad_tuning_variables(monkeypatch):
    gdn_chunk = pytest.importorskip("pgolf_kernels.gdn_chunk")
    for var in ("TRITON_INTERPRET", "PGOLF_GDN_WARPS", "PGOLF_GDN_DOT_PRECISION"):
        monkeypatch.delenv(var, raising=False)
    assert gdn_chunk.launch_options() == {"PREC": "tf32x3", "num_warps": 8}
    monkeypatch.setenv("PGOLF_GDN_WARPS", "4")
    monkeypatch.setenv("PGOLF_GDN_DOT_PRECISION", "tf32")
    assert gdn_chunk.launch_options() == {"PREC": "tf32", "num_warps": 4}
    monkeypatch.setenv("PGOLF_GDN_WARPS", "six")
    with pytest.raises(ValueError, match="PGOLF_GDN_WARPS"):
        gdn_chunk.launch_options()


def test_fp64_never_reaches_the_kernels(monkeypatch):
    """Where Triton runs, fp64 (gradcheck) must still take the torch path, state pass included:
    the kernels compute in fp32."""
    import pgolf.ops.gdn as gdn

    def no_kernels(name):
        raise AssertionError(f"fp64 reached the {name} kernels")

    monkeypatch.setattr(gdn, "use_triton", lambda x: True)
    monkeypatch.setattr(gdn, "kernel_module", no_kernels)
    xs, s0 = problem(b=1, t=20, h=1, k=4, v=3, dtype=torch.float64)
    o, final, _ = run(gdn_chunk_scan, xs, s0.double(), cotangents_for(xs, 1), chunk_size=16)
    assert o.dtype == torch.float64


def test_chunk_table_matches_its_definition():
    """Chunk c of sequence [lo, hi): first token lo + c·C, valid length min(C, hi − lo − c·C);
    every sequence, even an empty one, gets at least one chunk."""
    from pgolf.ops.gdn import _chunk_table, _layout

    cu, chunk = torch.tensor([0, 5, 5, 38, 40, 104]), 16
    tok, lens, starts = _chunk_table(cu, chunk, "cpu")
    want_tok, want_len, want_starts = [], [], [0]
    for lo, hi in zip(cu[:-1].tolist(), cu[1:].tolist()):
        n = max(1, -(-(hi - lo) // chunk))
        want_tok += [lo + c * chunk for c in range(n)]
        want_len += [max(0, min(chunk, hi - lo - c * chunk)) for c in range(n)]
        want_starts.append(want_starts[-1] + n)
    assert tok.tolist() == want_tok and lens.tolist() == want_len and starts.tolist() == want_starts
    index, _ = _layout(cu, chunk, "cpu")
    assert index.shape == (len(want_tok), chunk)
    assert sorted(index[index >= 0].tolist()) == list(range(104))  # every token in exactly one slot
    with pytest.raises(ValueError, match="cu_seqlens must rise"):
        gdn_chunk_scan(*problem(b=1, t=10, h=1, k=4, v=4)[0], cu_seqlens=torch.tensor([0, 6, 4, 10]))
