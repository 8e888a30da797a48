"""XSA and the SparseAttnGate (spec §5.3 items 6-7): against hand-written per-token formulas on
odd shapes with GQA, causal and document-isolated under sdpa and flex, roles declared, and
bit-identical to today's attention when off."""
import pytest
import torch
import torch.nn.functional as F

from attention_reference import DenseReference
from pgolf.config import load_config
from pgolf.errors import PgolfError
from pgolf.model import GPT
from pgolf.model.attention import CausalSelfAttention, attention_outputs
from pgolf.model.attention_backends import FlexDocument, SDPACausal
from pgolf.model.attention_outputs import ExclusiveSelfAttention, SparseAttnGate
from pgolf.model.layers import apply_rotary, rms_norm
from pgolf.model.roles import GATE, param_roles
from pgolf.model.segments import DocSegments
from pgolf.quant.recipe import quantize_state
from test_attention import packed_rows

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


def xsa_reference(y, v):
    """Token by token, head by head, in fp64: y_h - (y_h . v̂) v̂ with v̂ = v_g / |v_g|, g = h // (H / Hkv)."""
    y, v = y.double(), v.double()
    b, h, t, _ = y.shape
    group = h // v.size(1)
    out = torch.empty_like(y)
    for i in range(b):
        for head in range(h):
            for pos in range(t):
                own = v[i, head // group, pos]
                unit = own / own.norm()
                out[i, head, pos] = y[i, head, pos] - (y[i, head, pos] @ unit) * unit
    return out


def gate_reference(y, x, w, scale):
    """Token by token, head by head, in fp64: y_h * sigmoid(scale * sum_j w[h, j] x[j]) over the first window channels."""
    y, x, w = y.double(), x.double(), w.double()
    out = torch.empty_like(y)
    for i in range(y.size(0)):
        for head in range(y.size(1)):
            for pos in range(y.size(2)):
                score = sum(float(w[head, j]) * float(x[i, pos, j]) for j in range(w.size(1)))
                out[i, head, pos] = y[i, head, pos] / (1 + torch.exp(torch.tensor(-scale * score, dtype=torch.float64)))
    return out


@pytest.mark.parametrize("h, hkv, hd", [(6, 2, 10), (3, 3, 7), (4, 1, 6)])
def test_xsa_matches_the_per_token_formula_with_gqa(h, hkv, hd):
    gen = torch.Generator().manual_seed(h * 10 + hkv)
    y = torch.randn(2, h, 9, hd, generator=gen)
    v = torch.randn(2, hkv, 9, hd, generator=gen)
    got = ExclusiveSelfAttention()(y, v, None)
    torch.testing.assert_close(got.double(), xsa_reference(y, v), rtol=1e-5, atol=1e-5)
    # nothing is left along the own value, and a second pass changes nothing
    own = F.normalize(v, dim=-1).repeat_interleave(h // hkv, dim=1)
    assert (got * own).sum(-1).abs().max() < 1e-5
    torch.testing.assert_close(ExclusiveSelfAttention()(got, v, None), got, rtol=1e-5, atol=1e-5)


def test_xsa_reads_a_transposed_kernel_output():
    """flash's output is a transposed view [B, T, H, hd] -> [B, H, T, hd]: the same result."""
    y = torch.randn(2, 7, 6, 8).transpose(1, 2)
    v = torch.randn(2, 3, 7, 8)
    torch.testing.assert_close(ExclusiveSelfAttention()(y, v, None), ExclusiveSelfAttention()(y.contiguous(), v, None))


@pytest.mark.parametrize("h, window, scale", [(6, 12, 0.5), (3, 5, 1.0)])
def test_sparse_gate_matches_the_per_token_formula(h, window, scale):
    gen = torch.Generator().manual_seed(h)
    gate = SparseAttnGate(h, window, scale)
    with torch.no_grad():
        gate.weight.copy_(torch.randn(h, window, generator=gen))
    y, x = torch.randn(2, h, 7, 9, generator=gen), torch.randn(2, 7, 20, generator=gen)
    torch.testing.assert_close(gate(y, None, x).double(), gate_reference(y, x, gate.weight.detach(), scale),
                               rtol=1e-5, atol=1e-5)


def test_sparse_gate_starts_at_one_half():
    y = torch.randn(2, 4, 5, 8)
    assert torch.equal(SparseAttnGate(4, 12, 0.5)(y, None, torch.randn(2, 5, 32)), y * 0.5)


def attention(backend, outputs, seed=0, dim=48, h=6, hkv=2, rope_dims=4):
    torch.manual_seed(seed)
    attn = CausalSelfAttention(dim, h, hkv, 10000.0, 1.5, rope_dims, backend=backend, outputs=outputs)
    torch.nn.init.normal_(attn.proj.weight, std=0.05)
    if "gate" in outputs:
        torch.nn.init.normal_(attn.outputs["gate"].weight, std=0.5)
    return attn


def both():
    return {"xsa": ExclusiveSelfAttention(), "gate": SparseAttnGate(6, 12, 0.5)}


def test_the_module_applies_xsa_then_the_gate_before_the_projection():
    """The whole attention against its formula, written out: kernel, XSA, gate, projection."""
    attn = attention(SDPACausal(), both())
    x = torch.randn(2, 11, 48)
    b, t, _ = x.shape
    q = attn.c_q(x).view(b, t, 6, 8).transpose(1, 2)
    k = attn.c_k(x).view(b, t, 2, 8).transpose(1, 2)
    v = attn.c_v(x).view(b, t, 2, 8).transpose(1, 2)
    cos, sin = attn.rotary(t, x.device, x.dtype)
    q, k = apply_rotary(rms_norm(q), cos, sin) * attn.q_gain[None, :, None, None], apply_rotary(rms_norm(k), cos, sin)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    y = gate_reference(xsa_reference(y, v), x, attn.outputs["gate"].weight.detach(), 0.5).float()
    with torch.no_grad():
        torch.testing.assert_close(attn(x), attn.proj(y.transpose(1, 2).reshape(b, t, 48)), rtol=1e-5, atol=1e-5)


def test_with_both_on_a_change_at_t_changes_nothing_before_t():
    attn = attention(SDPACausal(), both())
    x = torch.randn(2, 23, 48)
    changed = x.clone()
    changed[:, 9:] = torch.randn(2, 14, 48)
    with torch.no_grad():
        a, b = attn(x), attn(changed)
    assert torch.equal(a[:, :9], b[:, :9]) and not torch.allclose(a[:, 9:], b[:, 9:])


def test_with_both_on_flex_equals_the_dense_reference_and_keeps_documents_apart():
    flex, dense = attention(FlexDocument(), both()), attention(DenseReference(), both())
    dense.load_state_dict(flex.state_dict())
    ids = packed_rows(2, 45)
    seg = DocSegments.from_tokens(ids, 1)
    x = torch.randn(2, 45, 48)
    with torch.no_grad():
        got = flex(x, seg.with_attention(flex.backend.prepare(seg)))
        torch.testing.assert_close(got, dense(x, seg.with_attention(dense.backend.prepare(seg))), rtol=1e-5, atol=1e-5)
        # row 0's documents: [0, 13), [13], [14, 22), [22, 45): change the third, the others stay bit-equal
        changed = x.clone()
        changed[0, 14:22] += torch.randn(8, 48)
        after = flex(changed, seg.with_attention(flex.backend.prepare(seg)))
    assert torch.equal(after[0, :14], got[0, :14]) and torch.equal(after[0, 22:], got[0, 22:])
    assert torch.equal(after[1], got[1]) and not torch.allclose(after[0, 14:22], got[0, 14:22])


def model_cfg(*overrides, doc_isolation=False):
    return load_config("smoke", ["model.num_layers=3", "model.model_dim=48", "model.num_heads=6",
                                 "model.num_kv_heads=2", "model.attention.rope_dims=4",
                                 f"model.doc_isolation={str(doc_isolation).lower()}", *overrides], env={}).model


def randomized(cfg, seed=0):
    torch.manual_seed(seed)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(std=0.3)
    return model


ON = ("model.attention.xsa=all", "model.attention.sparse_gate=true", "model.attention.sparse_gate_scale=0.5")


def test_a_model_with_both_keeps_documents_apart_under_flex():
    model = randomized(model_cfg(*ON, doc_isolation=True))
    assert isinstance(model.attention_backend, FlexDocument)
    ids = packed_rows(2, 45, vocab=1024)
    changed = ids.clone()
    changed[0, 15:22] = (changed[0, 15:22] + 5) % 1000 + 2  # inside the document [14, 22), no BOS made
    with torch.no_grad():
        a, b = model.hidden(ids), model.hidden(changed)
    assert torch.equal(a[0, :15], b[0, :15]) and torch.equal(a[0, 22:], b[0, 22:]) and torch.equal(a[1], b[1])
    assert not torch.allclose(a[0, 15:22], b[0, 15:22])


def test_a_model_with_both_is_causal_under_sdpa():
    model = randomized(model_cfg(*ON))
    ids = packed_rows(2, 40, vocab=1024)
    changed = ids.clone()
    changed[:, 17:] = (changed[:, 17:] + 3) % 1000 + 2
    with torch.no_grad():
        a, b = model.hidden(ids), model.hidden(changed)
    assert torch.equal(a[:, :17], b[:, :17]) and not torch.allclose(a[:, 17:], b[:, 17:])


def test_options_off_are_bit_identical_to_the_plain_attention():
    """Off: no output ops, the same parameters, the same state dict keys and the same bits;
    XSA on some layers leaves the others' bits alone."""
    plain, off = randomized(model_cfg()), randomized(model_cfg("model.attention.xsa="))
    assert all(len(b.mixer.outputs) == 0 for b in off.blocks)
    assert list(plain.state_dict()) == list(off.state_dict())
    ids = packed_rows(2, 40, vocab=1024)
    with torch.no_grad():
        assert torch.equal(plain.hidden(ids), off.hidden(ids))
    some = randomized(model_cfg("model.attention.xsa=2"))
    assert [list(b.mixer.outputs) for b in some.blocks] == [[], [], ["xsa"]]
    x = torch.randn(2, 19, 48)
    with torch.no_grad():
        for i in (0, 1):
            assert torch.equal(some.blocks[i].mixer(x), plain.blocks[i].mixer(x))
        assert not torch.allclose(some.blocks[2].mixer(x), plain.blocks[2].mixer(x))


def test_the_gate_is_a_gate_role_and_exports_int8_rowmax():
    model = GPT(model_cfg(*ON))
    roles = param_roles(model)
    gates = {name: role for name, role in roles.items() if role == GATE}
    assert sorted(gates) == [f"blocks.{i}.mixer.outputs.gate.weight" for i in range(3)]
    assert all(r.optimizer == "scalar" and r.quant == "int8_rowmax" for r in gates.values())
    assert model.blocks[0].mixer.outputs["gate"].weight.shape == (6, 12)
    state = {name: p.detach() for name, p in model.named_parameters()}
    encoded = quantize_state(state, load_config("smoke", env={}).export, roles)
    name = "blocks.1.mixer.outputs.gate.weight"
    assert encoded[name].scheme == "int_row" and encoded[name].bits == 8


def test_record_shapes_and_parameter_count():
    """11 layers x 8 heads x 12: 1,056 gate values, the record's attn_gate_w [8, 12] per layer (spec §5.2)."""
    base = ["model.num_layers=11", "model.vocab_size=8192", "model.mlp_mult=4"]
    plain = load_config("baseline", base, env={}).model
    gated = load_config("baseline", [*base, *ON], env={}).model
    count = lambda cfg: sum(p.numel() for p in GPT(cfg).parameters())
    with torch.device("meta"):
        assert count(gated) - count(plain) == 11 * 8 * 12
    ops = attention_outputs(gated, 4)
    assert list(ops) == ["xsa", "gate"] and ops["gate"].scale == 0.5 and ops["gate"].window == 12


@pytest.mark.parametrize("overrides, message", [
    (["model.attention.xsa=3"], r"xsa='3' must name layers in 0\.\.2"),
    (["model.arch=gdn", "model.stack.attn_layers=1", "model.gdn_head_dim=8", "model.gdn_chunk_size=16",
      "model.attention.xsa=0-1"], "names layers without attention"),
    (["model.attention.sparse_gate=true", "model.attention.sparse_gate_window=49"], "exceeds model.model_dim"),
])
def test_bad_options_are_clear_errors(overrides, message):
    with pytest.raises(PgolfError, match=message):
        model_cfg(*overrides)


def test_xsa_all_on_a_hybrid_means_its_attention_layers():
    cfg = model_cfg("model.arch=gdn", "model.stack.attn_layers=1", "model.gdn_head_dim=8", "model.gdn_chunk_size=16",
                    "model.attention.xsa=all")
    model = GPT(cfg)
    assert list(model.blocks[1].mixer.outputs) == ["xsa"]


def test_q_gain_is_the_records_shape_and_init():
    """Spec §5.3 item 4 / frontier F6: a learnable gain per query head, all at QK_GAIN_INIT (5.0; 5.25 in
    #1953), multiplying q after QK-norm and RoPE (the formula test above applies it there)."""
    model = GPT(load_config("smoke", ["QK_GAIN_INIT=5.25"], env={}).model)
    q_gain = model.blocks[0].mixer.q_gain
    assert q_gain.shape == (model.cfg.num_heads,) and torch.equal(q_gain, torch.full_like(q_gain, 5.25))
    assert param_roles(model)["blocks.0.mixer.q_gain"].kind == "control"


def test_gradcheck_in_fp64():
    """Both train: their gradients (y, v, x and the gate weight) against finite differences."""
    gen = torch.Generator().manual_seed(5)
    y = torch.randn(1, 4, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 2, 3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    x = torch.randn(1, 3, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda y, v: ExclusiveSelfAttention()(y, v, None), (y, v))
    gate = SparseAttnGate(4, 6, 0.5).double()
    with torch.no_grad():
        gate.weight.normal_(generator=gen)
    assert torch.autograd.gradcheck(lambda y, x, w: torch.func.functional_call(gate, {"weight": w}, (y, None, x)),
                                    (y, x, gate.weight.detach().clone().requires_grad_()))


def test_compiled_equals_eager_with_both_on():
    """One graph (fullgraph) with XSA and the gate, forward and gradients as eager's."""
    attn = attention(SDPACausal(), both())
    compiled = torch.compile(attn, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 17, 48)
    outs, grads = [], []
    for module in (attn, compiled):
        xi = x.clone().requires_grad_()
        out = module(xi)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append((xi.grad, attn.outputs["gate"].weight.grad.clone()))
        attn.zero_grad(set_to_none=True)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
