"""Issue 14 item 1, the wiring side (spec §5.3, §5.5, §5.6): the input-gated SmearGate with its
BOS mask, LN scale, gated U-Net skips, depth recurrence and parallel residual lanes, each
against a hand-written reference of its formula, the identity at init, with its roles declared,
bit-identical to today's model when off, and causal."""
import math

import pytest
import torch
import torch.nn.functional as F

from attention_reference import DenseReference, use_backend
from pgolf.config import ExportConfig, from_dict, load_config
from pgolf.errors import PgolfError
from pgolf.export.artifact import decode_artifact, encode_artifact
from pgolf.export.export import build_artifact
from pgolf.model import GPT
from pgolf.model.block import ParallelBlock
from pgolf.model.embeddings import InputGatedSmearGate
from pgolf.model.gpt import gated_skip
from pgolf.model.plan import build_plan
from pgolf.model.roles import param_roles
from pgolf.quant.encoding import dequantize_state_dict

TINY = ["model.num_layers=4", "model.model_dim=32", "model.num_heads=2", "model.num_kv_heads=1",
        "model.vocab_size=64"]
BOS = 1


def _rms(x):
    return F.rms_norm(x, (x.size(-1),))


def tiny(*overrides, seed=0, busy=True):
    """A small model; `busy`: every parameter perturbed, so zero-init weights and gates matter."""
    torch.manual_seed(seed)
    model = GPT(load_config("smoke", [*TINY, *overrides], env={}).model)
    if model.cfg.doc_isolation:
        use_backend(model, DenseReference())
    return _perturbed(model, seed) if busy else model


def _perturbed(model, seed):
    """Every parameter moved off its init (seeded), so zero-init weights and gates take part."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * (0.05 if p.ndim == 2 else 0.2))
    return model


def ids_with_docs(seed=0, b=2, t=40):
    ids = torch.randint(2, 64, (b, t), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = BOS
    ids[0, [13, 14, 29]] = BOS  # documents of odd lengths (one empty)
    ids[1, 21] = BOS
    return ids


def assert_causal(model, ids):
    """Changing the last tokens changes no earlier position's hidden state."""
    with torch.no_grad():
        a = model.hidden(ids)
        changed = ids.clone()
        changed[:, -3:] = (changed[:, -3:] + 1) % 62 + 2
        b = model.hidden(changed)
    torch.testing.assert_close(a[:, :-3], b[:, :-3], rtol=0, atol=0)
    assert not torch.equal(a[:, -3:], b[:, -3:])


# ---------------------------------------------------------------------------------------
# SmearGate, input-gated with the BOS mask (spec §5.6)


def smear_reference(e, ids, w, lam, bos=BOS):
    """Token by token: e_t + λ·σ(w·e_t[:12])·e_{t−1}·[id_t ≠ BOS] for t ≥ 1."""
    out = e.clone()
    for b in range(e.size(0)):
        for t in range(1, e.size(1)):
            if ids[b, t] != bos:
                out[b, t] = e[b, t] + lam * torch.sigmoid(w @ e[b, t, :12]) * e[b, t - 1]
    return out


def test_input_gated_smear_matches_its_formula():
    gate = InputGatedSmearGate(32, BOS)
    with torch.no_grad():
        gate.gate.weight.normal_()
        gate.lam.fill_(0.7)
    e, ids = torch.randn(2, 40, 32, dtype=torch.float64), ids_with_docs()
    gate.double()
    expected = smear_reference(e, ids, gate.gate.weight[0], gate.lam[0])
    torch.testing.assert_close(gate(e, None, ids), expected, rtol=1e-12, atol=1e-12)


def test_input_gated_smear_is_the_identity_at_init_with_its_roles():
    model = tiny("model.smear_gate=true", "model.smear_form=input_gated", busy=False)
    roles = param_roles(model)
    assert roles["smear.gate.weight"].kind == "gate" and roles["smear.lam"].kind == "control"
    assert model.smear.gate.weight.shape == (1, 12) and model.smear.lam.shape == (1,)
    ids = ids_with_docs()
    with torch.no_grad():
        torch.testing.assert_close(model.embed(ids, None), _rms(model.tok_emb(ids)), rtol=0, atol=0)


def test_input_gated_smear_applies_before_the_embedding_norm():
    model = tiny("model.smear_gate=true", "model.smear_form=input_gated")
    ids = ids_with_docs()
    with torch.no_grad():
        e = model.tok_emb(ids)
        expected = _rms(smear_reference(e, ids, model.smear.gate.weight[0], model.smear.lam[0]))
        torch.testing.assert_close(model.embed(ids, None), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("isolation", [True, False])
def test_no_token_of_a_document_reaches_the_next(isolation):
    """C1 (spec §5.6): changing any token of document k changes nothing in document k+1, in a
    training forward (train mode, with grad) and an eval one (eval mode, no grad). Without
    doc_isolation attention itself crosses documents, so there the smeared embedding x0 is compared."""
    model = tiny("model.smear_gate=true", "model.smear_form=input_gated", f"model.doc_isolation={isolation}")
    ids = ids_with_docs()
    for k_start, k_end in ((0, 13), (14, 29)):  # row 0's documents k (ending at the BOS of k+1)
        for pos in range(k_start, k_end):
            changed = ids.clone()
            changed[0, pos] = 2 + (changed[0, pos] + 5) % 62
            if isolation:
                model.train()
                a = model(ids, ids, reduction="none").view(2, -1)
                b = model(changed, ids, reduction="none").view(2, -1)
                assert torch.equal(a[0, k_end:], b[0, k_end:]) and torch.equal(a[1], b[1])
                model.eval()
                with torch.no_grad():
                    a, b = model.hidden(ids), model.hidden(changed)
            else:
                with torch.no_grad():
                    a, b = model.embed(ids, None), model.embed(changed, None)
            assert torch.equal(a[0, k_end:], b[0, k_end:]) and torch.equal(a[1], b[1])
            assert not torch.equal(a[0, pos], b[0, pos])


def test_input_gated_smear_is_causal():
    assert_causal(tiny("model.smear_gate=true", "model.smear_form=input_gated", "model.doc_isolation=true"),
                  ids_with_docs())


def test_static_smear_is_unchanged():
    """smear_form defaults to the static gate: the same module and parameters as before."""
    model = tiny("model.smear_gate=true")
    assert type(model.smear).__name__ == "SmearGate" and param_roles(model)["smear.gate"].kind == "control"


# ---------------------------------------------------------------------------------------
# The record's stack (spec §5.3, §5.5): LN scale, gated skips, recurrence, parallel lanes,
# against a hand-written walk that knows nothing of plans.

ELEVEN = ["model.num_layers=11", "model.model_dim=32", "model.num_heads=2", "model.num_kv_heads=1",
          "model.vocab_size=64", "model.mlp_mult=2"]
LN, GATED, LOOP, PARALLEL = (["model.stack.ln_scale=true"], ["model.stack.skip_gates=true"],
                             ["model.stack.loop_layers=3-5", "model.stack.loop_count=3"],
                             ["model.stack.parallel_start=8"])
RECORD = [*LN, *GATED, *LOOP, *PARALLEL]
RECORD_ORDER = [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]


def eleven(*overrides, busy=True, seed=0):
    torch.manual_seed(seed)
    model = GPT(load_config("smoke", [*ELEVEN, *overrides], env={}).model)
    return _perturbed(model, seed) if busy else model


def reference_hidden(model, ids, order, ln=False, gated=False, parallel_start=None):
    """Spec §5.5 written out: encoder = first half of `order` (pushes), decoder pops while
    skips remain (w_j·s added, or lerp(w_j·s, x, σ(g_j))), lanes from parallel_start on, final
    hidden = RMSNorm(mean of the lanes)."""
    x0 = model.embed(ids, None)
    x, lane0, lane1, skips = x0, None, None, []
    enc = len(order) // 2
    for i, layer in enumerate(order):
        blk, s = model.blocks[layer], (1 / math.sqrt(layer + 1) if ln else 1.0)
        mix = blk.resid_mix
        parallel = parallel_start is not None and layer >= parallel_start
        if parallel and lane0 is None:
            lane0 = lane1 = x
        if i >= enc and skips:
            j = i - enc
            ws = model.skip_weights[j] * skips.pop()
            cur = lane0 if parallel else x
            cur = ws + torch.sigmoid(model.skip_gates[j]) * (cur - ws) if gated else cur + ws
            lane0, x = (cur, x) if parallel else (lane0, cur)
        if parallel:
            a = blk.attn_scale * blk.mixer(_rms(mix[0] * lane0 + mix[1] * x0) * s, None)
            m = blk.mlp_scale * blk.mlp(_rms(lane1) * s)
            r, p = blk.resid_lambdas, blk.post_lambdas
            lane0, lane1 = (r[0] * lane0 + p[0, 0] * a + p[1, 0] * m, r[1] * lane1 + p[0, 1] * a + p[1, 1] * m)
        else:
            x_in = mix[0] * x + mix[1] * x0
            x = x_in + blk.attn_scale * blk.mixer(_rms(x_in) * s, None)
            x = x + blk.mlp_scale * blk.mlp(_rms(x) * s)
        if i < enc:
            skips.append(x)
    return _rms(x if lane0 is None else 0.5 * (lane0 + lane1))


def test_ln_scale_uses_the_physical_layer():
    """Spec §5.3: s_l = 1/sqrt(l+1), l the physical index, so every visit of a looped layer shares it."""
    plan = build_plan(load_config("smoke", [*ELEVEN, *LN, *LOOP], env={}).model, recurrence=True)
    assert [s.norm_scale for s in plan.slots] == [1 / math.sqrt(s.layer + 1) for s in plan.slots]
    assert plan.slots[3].norm_scale == plan.slots[6].norm_scale == plan.slots[9].norm_scale == 0.5
    off = build_plan(load_config("smoke", ELEVEN, env={}).model)
    assert {s.norm_scale for s in off.slots} == {1.0}


def test_gated_skip_formula_and_init():
    x, s = torch.randn(2, 5, 8, dtype=torch.float64), torch.randn(2, 5, 8, dtype=torch.float64)
    gates = torch.randn(3, 8, dtype=torch.float64)
    g = 1 / (1 + torch.exp(-gates[1]))
    torch.testing.assert_close(gated_skip(x, s, gates, 1), g * x + (1 - g) * s, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gated_skip(x, s, torch.zeros(3, 8, dtype=torch.float64), 0), 0.5 * (x + s))
    assert torch.equal(gated_skip(x, x, torch.zeros(3, 8, dtype=torch.float64), 0), x)  # identity when x = s


def test_parallel_block_formula_and_init():
    torch.manual_seed(0)
    model = eleven(*PARALLEL)
    blk = model.blocks[9]
    assert isinstance(blk, ParallelBlock) and not isinstance(model.blocks[7], ParallelBlock)
    l0, l1, x0 = (torch.randn(2, 6, 32) for _ in range(3))
    with torch.no_grad():
        out = blk((l0, l1), x0, None, 0.25)
        mix, r, p = blk.resid_mix, blk.resid_lambdas, blk.post_lambdas
        a = blk.attn_scale * blk.mixer(_rms(mix[0] * l0 + mix[1] * x0) * 0.25, None)
        m = blk.mlp_scale * blk.mlp(_rms(l1) * 0.25)
        torch.testing.assert_close(out[0], r[0] * l0 + p[0, 0] * a + p[1, 0] * m, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(out[1], r[1] * l1 + p[0, 1] * a + p[1, 1] * m, rtol=1e-6, atol=1e-6)
    fresh = eleven(*PARALLEL, busy=False).blocks[9]
    assert fresh.resid_lambdas.tolist() == pytest.approx([1.1, 1.1]) and fresh.post_lambdas.eq(1).all()
    with torch.no_grad():
        o0, o1 = fresh((l0, l1), x0)
    torch.testing.assert_close(o0, 1.1 * l0) and torch.testing.assert_close(o1, 1.1 * l1)


COMBOS = {"ln": (LN, dict(ln=True)), "gated": (GATED, dict(gated=True)), "parallel": (PARALLEL, dict(parallel_start=8)),
          "record": ([*LN, *GATED, *PARALLEL], dict(ln=True, gated=True, parallel_start=8))}


@pytest.mark.parametrize("name", list(COMBOS))
@pytest.mark.parametrize("recurrence", ["no loop", "off", "on"])
def test_the_stack_matches_the_hand_written_walk(name, recurrence):
    """Without loop_layers, and with them before (plain order, 8 skip weights of which 5 are
    used) and after the switch (17 virtual layers)."""
    overrides, kw = COMBOS[name]
    model = eleven(*overrides, *(LOOP if recurrence != "no loop" else []))
    assert model.skip_weights.shape[0] == (5 if recurrence == "no loop" else 8)
    model.set_recurrence(recurrence == "on")
    ids = ids_with_docs()
    order = RECORD_ORDER if recurrence == "on" else list(range(11))
    with torch.no_grad():
        torch.testing.assert_close(model.hidden(ids), reference_hidden(model, ids, order, **kw), rtol=1e-5, atol=1e-5)


def test_the_record_stack_is_the_identity_at_init_and_declares_its_roles():
    """Spec §5.2: zero output projections, gates 0, skip weights 1, lanes r=1.1 / P=1: every
    block is the identity, skips give 0.5·(x + x), the lanes only scale, which the final norm undoes."""
    model = eleven(*RECORD, busy=False)
    roles = param_roles(model)
    assert roles["skip_gates"].kind == "control" and model.skip_gates.shape == (8, 32)
    # one tensor each over all 11 layers, as the record stores them (spec §5.2); blocks 8-10 read their rows
    assert roles["parallel.resid_lambdas"].kind == roles["parallel.post_lambdas"].kind == "control"
    assert model.parallel.resid_lambdas.shape == (11, 2) and model.parallel.post_lambdas.shape == (11, 2, 2)
    assert not any(n.startswith("blocks.") and "lambdas" in n for n in roles)
    ids = ids_with_docs()
    with torch.no_grad():
        x0 = model.embed(ids, None)
        for on in (False, True):
            model.set_recurrence(on)
            torch.testing.assert_close(model.hidden(ids), _rms(x0), rtol=0, atol=2e-6)


def test_the_record_stack_is_causal():
    model = eleven(*RECORD, "model.smear_gate=true", "model.smear_form=input_gated")
    for on in (False, True):
        model.set_recurrence(on)
        assert_causal(model, ids_with_docs())


# ---------------------------------------------------------------------------------------
# Depth recurrence: the plans, the switch, and torch.compile's guards


def test_the_record_plans_from_config():
    """Spec §5.5: looped encoder [0,1,2,3,4,5,3,4], decoder [5,3,4,5,6,7,8,9,10] with skip
    weights 0..7 and none for layer 10; plain encoder 0..4, decoder 5..10 with weights 0..4;
    lanes from the first visit of layer 8 on, in both."""
    cfg = load_config("smoke", [*ELEVEN, *RECORD], env={}).model
    on, off = build_plan(cfg, recurrence=True), build_plan(cfg, recurrence=False)
    assert [s.layer for s in on.slots] == RECORD_ORDER and on.num_encoder == 8 and on.num_skip_weights == 8
    assert [s.skip_pop for s in on.slots[8:]] == [*range(8), None]
    assert off.num_encoder == 5 and off.num_skip_weights == 8 and [s.skip_pop for s in off.slots[5:]] == [0, 1, 2, 3, 4, None]
    for plan in (on, off):
        assert [s.layer for s in plan.slots if s.lanes == 2] == [8, 9, 10]


def test_recurrence_switches_the_forward_exactly_when_asked():
    model = eleven(*RECORD)
    assert model.recurrence  # built looping: eval's model
    ids = ids_with_docs()
    with torch.no_grad():
        on = model.hidden(ids)
        model.set_recurrence(False)
        assert not model.recurrence
        off = model.hidden(ids)
        assert torch.equal(model.hidden(ids), off) and not torch.allclose(on, off, atol=1e-3)
        model.set_recurrence(True)
        assert torch.equal(model.hidden(ids), on)
    plain = eleven()
    plain.set_recurrence(False)  # without loop_layers both plans are the same walk
    assert plain.plans[False] == plain.plans[True]


def test_compiled_forward_follows_the_switch():
    """torch.compile guards on the plan: the switch recompiles once (the compiled forward
    changes, it is not constant-folded), and switching back reuses the first graph."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    model = eleven(*RECORD)
    ids = ids_with_docs()
    counter = CompileCounter()
    compiled = torch.compile(model.hidden, backend=counter)
    results = {}
    with torch.no_grad():
        model.hidden(ids)  # fills the RoPE tables' cache (Rotary's first call would recompile once on its own)
        for on in (False, True, False, True):
            model.set_recurrence(on)
            out = compiled(ids)
            results.setdefault(on, out)
            assert torch.equal(out, results[on])
            torch.testing.assert_close(out, model.hidden(ids), rtol=0, atol=0)
    assert counter.frame_count == 2
    assert not torch.allclose(results[False], results[True], atol=1e-3)
    torch._dynamo.reset()


@pytest.mark.parametrize("overrides, message", [
    (["model.stack.loop_layers=3,5"], "one contiguous range"),
    (["model.stack.loop_layers=9-11"], "must name layers"),
    (["model.stack.parallel_start=11"], "parallel_start=11"),
    (["model.stack.loop_layers=3-5", "model.stack.parallel_start=4"], "after the looped layers"),
])
def test_bad_stack_settings_are_named(overrides, message):
    with pytest.raises(PgolfError, match=message):
        load_config("smoke", [*ELEVEN, *overrides], env={})


# ---------------------------------------------------------------------------------------
# Training and export see the new parameters


def test_every_parameter_trains_in_both_plans():
    """All parameters get a gradient before and after the switch (DDP needs no unused-parameter search)."""
    model = eleven(*RECORD, "model.smear_gate=true", "model.smear_form=input_gated").train()
    ids = ids_with_docs()
    for on in (False, True):
        model.zero_grad(set_to_none=True)
        model.set_recurrence(on)
        model(ids, ids).backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
        assert not missing, (on, missing)


def test_the_record_stack_round_trips_through_an_artifact():
    """Exported by the roles it declares (gate int8 row-max, controls fp32) and loaded strictly into a
    model rebuilt from the artifact's config: controls exactly, the forward close."""
    cfg = load_config("smoke", [*ELEVEN, *RECORD, "model.smear_gate=true", "model.smear_form=input_gated"], env={})
    model = eleven(*RECORD, "model.smear_gate=true", "model.smear_form=input_gated")
    art = build_artifact(model.state_dict(), cfg.to_dict()["model"], ExportConfig(method="rtn", matrix_bits=8,
                                                                                   embed_bits=8))
    back = decode_artifact(encode_artifact(art, "plain", "zlib")[0])
    rebuilt = GPT(from_dict({"model": back.model_config}, "artifact").model)
    rebuilt.load_state_dict(dequantize_state_dict(back.tensors), strict=True)
    for name in ("skip_gates", "parallel.resid_lambdas", "parallel.post_lambdas", "smear.lam"):
        assert torch.equal(rebuilt.get_parameter(name), model.get_parameter(name)), name
    assert rebuilt.recurrence and rebuilt.plan == model.plans[True]
    ids = ids_with_docs()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.hidden(ids), model.hidden(ids), rtol=0, atol=0.01)
