"""Parameter roles: declared once by the owning module, read by every consumer (optimizer groups,
quantization, layout groups, late QAT, fp32 keeping, Hessians), and unchanged behaviour for the
presets that had no misassigned parameter (against tests/golden/roles_reference.json, recorded
at 04590db, before roles existed)."""
from __future__ import annotations

import copy
import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from pgolf.config import ExportConfig, load_config
from pgolf.export.export import build_artifact
from pgolf.export.layout import lay_out
from pgolf.model import GPT, param_roles, roles_for_config
from pgolf.model.layers import CastedLinear
from pgolf.model.roles import CODED_KINDS, CONTROL, GATE, Role, RoleError, declare, matrix
from pgolf.optim.build import build_optimizers, param_groups
from pgolf.quant.hessians import HessianCollector
from pgolf.quant.qat import enable_late_qat, qat_layers
from pgolf.quant.recipe import KEEP_FLOAT_MAX_NUMEL, quantize_state

GOLDEN = Path(__file__).parent / "golden"
PRESETS = {"smoke": ("smoke", []), "baseline": ("baseline", []), "gdn": ("gdn", []),
           "gdn_hybrid": ("gdn", ["model.attn_layers=1,4"]), "untied": ("smoke", ["model.tie_embeddings=false"])}
# A GDN hybrid small enough for the CPU whose projections, MLP and n-gram table exceed the fp16 passthrough.
TINY_HYBRID = ["model.arch=gdn", "model.num_layers=3", "model.attn_layers=1", "model.model_dim=288",
               "model.num_heads=4", "model.num_kv_heads=2", "model.gdn_head_dim=64", "model.gdn_chunk_size=16",
               "model.kv_share_stride=2", "model.unet_skips=false", "model.bigram_buckets=4096", "model.bigram_dim=32",
               "model.smear_gate=true", "model.mlp_mult=2", "model.vocab_size=512"]


def meta_model(preset: str, overrides: list[str]) -> GPT:
    with torch.device("meta"):
        return GPT(load_config(preset, overrides, env={}).model)


def tiny_hybrid(*overrides: str, seed: int = 0) -> tuple[GPT, object]:
    cfg = load_config("smoke", [*TINY_HYBRID, *overrides], env={})
    torch.manual_seed(seed)
    model = GPT(cfg.model)
    for p in model.parameters():
        if p.ndim == 2:
            nn.init.normal_(p, std=0.02)
    return model, cfg


@pytest.mark.parametrize("preset", PRESETS)
def test_every_parameter_of_every_preset_has_exactly_one_role(preset):
    model = meta_model(*PRESETS[preset])
    roles = param_roles(model)
    assert list(roles) == [n for n, _ in model.named_parameters()]
    assert all(isinstance(r, Role) for r in roles.values())
    assert roles == roles_for_config(load_config(*PRESETS[preset], env={}).model)
    params = dict(model.named_parameters())
    for name, role in roles.items():
        assert (role.kind in CODED_KINDS) == bool(role.group), name
        if role.kind in ("control", "conv", "norm"):
            assert params[name].numel() <= KEEP_FLOAT_MAX_NUMEL, name  # passthrough by size too


@pytest.mark.parametrize("preset", PRESETS)
def test_optimizer_groups_follow_the_roles(preset):
    model = meta_model(*PRESETS[preset])
    roles = param_roles(model)
    by_id = {id(p): n for n, p in model.named_parameters()}
    grouped = [(g, by_id[id(p)]) for g, ps in param_groups(model).items() for p in ps]
    assert sorted(n for _, n in grouped) == sorted(n for n, p in model.named_parameters() if p.numel())
    assert all(roles[n].optimizer == g for g, n in grouped)


def test_the_gdn_models_roles():
    roles = param_roles(meta_model("gdn", []))
    gdn = {n: r for n, r in roles.items() if r.kind == "matrix" and r.group.startswith("gdn.")}
    assert {r.group for r in gdn.values()} == {"gdn.q", "gdn.k", "gdn.v", "gdn.g", "gdn.o", "gdn.a", "gdn.b"}
    assert len(gdn) == 10 * 5 + 5 * 2  # q, g, o, a, b per layer; k, v once per shared pair
    assert roles["bigram.table.weight"] == Role("ngram_table", group="ngram")
    assert roles["bigram.table.weight"].optimizer == "embed" and roles["bigram.table.weight"].bits == "matrix"
    assert roles["tok_emb.weight"].tied and roles["tok_emb.weight"].hessian == "head"
    assert {roles[n].kind for n in roles if n.endswith(("A_log", "dt_bias", "smear.gate", "bigram.scale"))} == {"control"}


def test_a_parameter_without_a_role_raises_with_its_name():
    model, cfg = tiny_hybrid()
    model.blocks[0].extra = nn.Parameter(torch.zeros(3))
    with pytest.raises(RoleError, match=r"parameter blocks\.0\.extra \(Block\.extra\) has no declared role"):
        param_roles(model)
    with pytest.raises(RoleError, match=r"blocks\.0\.extra"):
        build_optimizers(model, cfg.optim)
    with pytest.raises(RoleError, match=r"tensor blocks\.0\.extra has no parameter role"):
        quantize_state(model.state_dict(), cfg.export, roles_for_config(cfg.model))
    with pytest.raises(TypeError, match="role"):
        CastedLinear(4, 4)  # a linear layer must say what its weight is


def test_two_roles_for_one_parameter_raise():
    a, b = CastedLinear(4, 4, role=matrix("x", "attn")), CastedLinear(4, 4, role=matrix("y", "mlp"))
    b.weight = a.weight  # one parameter, registered twice, declared as two different things
    with pytest.raises(RoleError, match=r"parameter 1\.weight is 0\.weight too, with two roles"):
        param_roles(nn.Sequential(a, b))
    with pytest.raises(RoleError, match="declared twice"):
        declare(a, weight=CONTROL)
    with pytest.raises(RoleError, match="no parameter 'nope'"):
        declare(a, nope=CONTROL)
    with pytest.raises(RoleError, match="layout group"):
        Role("matrix", clip="attn")  # a coded kind must name its layout group


def test_roles_survive_casts_copies_loads_and_wrappers(tmp_path):
    model, _ = tiny_hybrid()
    roles = param_roles(model)
    assert param_roles(model.to(torch.float64)) == roles and param_roles(model.bfloat16().float()) == roles
    assert param_roles(copy.deepcopy(model)) == roles
    fresh, _ = tiny_hybrid(seed=1)
    fresh.load_state_dict(model.state_dict(), assign=True)  # assign replaces the Parameter objects
    assert param_roles(fresh) == roles
    assert param_roles(torch.compile(model)) == {f"_orig_mod.{n}": r for n, r in roles.items()}
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(model)
        assert param_roles(ddp) == {f"module.{n}": r for n, r in roles.items()}
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def hybrid_encoded():
    """The tiny hybrid quantized once (SDClip scales without Hessians: RTN, fast), and its grouped layout."""
    model, cfg = tiny_hybrid()
    roles = param_roles(model)
    enc = quantize_state(model.state_dict(), ExportConfig(method="gptq", matrix_bits=6, embed_bits=7), roles)
    return model, roles, enc, lay_out(enc, "grouped", "zlib", roles)


def test_quantization_and_layout_follow_the_roles(hybrid_encoded):
    model, roles, enc, (streams, index) = hybrid_encoded
    for name, e in enc.items():
        role, t = roles[name], model.state_dict()[name]
        if role.quant == "control":  # fp32 by default (export.control_dtype)
            assert (e.scheme, e.parts["data"].dtype) == ("raw", np.float32), name
        elif t.numel() <= KEEP_FLOAT_MAX_NUMEL:
            assert (e.scheme, e.parts["data"].dtype) == ("raw", np.float16), name
        else:
            assert role.quant == "coded" and e.scheme == "int_row", name
            assert e.bits == (7 if role.bits == "embed" else 6), name
    coded = {n for n, e in enc.items() if e.scheme == "int_row"}
    assert {roles[n].group for n in coded} == {"tok_emb", "attn.c_q", "attn.proj", "gdn.q", "gdn.k", "gdn.v", "gdn.g",
                                               "gdn.o", "mlp.fc", "mlp.proj", "ngram"}  # GQA's c_k, c_v: fp16
    for entry in index:
        q = entry["parts"].get("q")
        if entry["name"] in coded:  # every coded tensor's codes sit in its role's group stream
            assert streams[q["stream"]].name == roles[entry["name"]].group, entry["name"]
            assert q["transform"]["permuted"] == roles[entry["name"]].hot
    assert [s.name for s in streams][:4] == ["remainder", "tok_emb", "ngram", "gdn.q"]  # order of first appearance


def test_gdn_projections_are_bit_packed_in_their_groups(hybrid_encoded):
    """Before roles, every GDN projection fell out of the groups: one byte per int6 code."""
    _, roles, enc, (streams, index) = hybrid_encoded
    for group in ("gdn.q", "gdn.k", "gdn.v", "gdn.g", "gdn.o", "ngram"):
        stream = next(i for i, s in enumerate(streams) if s.name == group)
        entries = [e["parts"]["q"] for e in index if roles[e["name"]].group == group and "transform" in e["parts"]["q"]]
        codes = sum(enc[e["name"]].parts["q"].size for e in index if roles[e["name"]].group == group)
        assert entries and all(q["stream"] == stream for q in entries)
        packed = {q["transform"]["packed"] for q in entries}
        assert len(packed) == 1  # the group keeps whichever form compresses smaller: packed is one of them
        assert len(streams[stream].raw) == (codes * 6 // 8 if packed.pop() else codes), group


def test_export_of_a_bare_state_dict_rebuilds_the_roles_from_its_config():
    model, cfg = tiny_hybrid()
    art = build_artifact(model.state_dict(), cfg.to_dict()["model"], ExportConfig(method="rtn"))
    assert art.roles == param_roles(model)  # what `pgolf export CHECKPOINT` gets: the roles the model declares


class GateOwner(nn.Module):
    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.gate_w = nn.Parameter(w)
        declare(self, gate_w=GATE)


def test_gates_are_int8_with_row_max_scales():
    """Spec §5.11: a gate matrix is int8 per row, scale = row max / 127 in fp16 (not the baseline's
    percentile clip with its 1/127 floor, which would code a small gate to zeros)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 12, generator=g) * torch.tensor([1e-3, 0.01, 0.1, 1.0, 3.0, 1e-3, 0.5, 0.0])[:, None]
    w[2, 5] = 0.9  # an outlier that a percentile would clip
    owner = GateOwner(w)
    e = quantize_state(owner.state_dict(), ExportConfig(), param_roles(owner))["gate_w"]
    assert (e.scheme, e.bits) == ("int_row", 8)
    for r in range(8):
        row = w[r].tolist()
        m = max(abs(v) for v in row)
        s = m / 127.0
        codes = [max(-127, min(127, round(v / s))) if s else 0 for v in row]
        assert e.parts["q"][r].tolist() == codes, r
        assert e.parts["scale"][r] == np.float16(np.float32(m) / np.float32(127.0)), r
    assert np.abs(e.parts["q"][:7]).max(axis=1).tolist() == [127] * 7  # every nonzero row spans the range
    _, index = lay_out({"gate_w": e}, "grouped", "zlib", param_roles(owner))
    assert index[0]["parts"]["q"]["stream"] == 0 and "transform" not in index[0]["parts"]["q"]  # remainder, as is


def test_late_qat_and_hessians_follow_the_roles():
    model, cfg = tiny_hybrid()
    roles = param_roles(model)
    export = ExportConfig(attn_clip_sigmas=13.0, mlp_clip_sigmas=11.5, matrix_clip_sigmas=12.85)
    layers = qat_layers(model, export)
    assert layers and all(roles[f"{n}.weight"].qat for n in layers)
    sigmas = {roles[f"{n}.weight"].group: s for n, (_, s) in layers.items()}
    assert sigmas["attn.c_q"] == sigmas["gdn.q"] == 13.0 and sigmas["mlp.fc"] == 11.5
    assert "gdn.a" not in sigmas  # an fp16 passthrough matrix does not train against codes
    assert enable_late_qat(model, export) == len(layers)
    collector = HessianCollector(model)
    with torch.no_grad():
        model(torch.randint(0, 512, (1, 32)), torch.randint(0, 512, (1, 32)))
    collector.remove()
    assert set(collector.hessians()) == {n for n, r in roles.items() if r.hessian}
    untied = meta_model("smoke", ["model.tie_embeddings=false"])
    head = {n for n, r in param_roles(untied).items() if r.hessian == "head"}
    assert head == {"lm_head.weight"}


def _reference_module():
    spec = importlib.util.spec_from_file_location("make_roles_reference", GOLDEN / "make_roles_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_roles_reference", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["smoke", "baseline", "gdn", "gdn_hybrid", "untied"])
def test_consumers_do_what_they_did_before_roles(name):
    """Optimizer groups (and their order), late QAT layers, fp32 parameters and Hessian targets:
    unchanged for every preset (GDN's too: its roles fix changes only the layout)."""
    ref, golden = _reference_module(), json.loads((GOLDEN / "roles_reference.json").read_text())
    preset, overrides = ref.MODELS[name]
    cfg = load_config(preset, overrides, env={})
    torch.manual_seed(0)
    model = GPT(cfg.model)
    # The golden predates the layer plan, which renamed blocks.N.attn.* to blocks.N.mixer.* (format 3).
    want = json.loads(re.sub(r"blocks\.(\d+)\.attn\.", r"blocks.\1.mixer.", json.dumps(golden["models"][name])))
    want.update({k: sorted(want[k]) for k in ("qat", "fp32", "hessians") if want[k] is not None})  # sorted names
    assert ref.groups(model, cfg) == want["optimizer_groups"]
    assert ref.qat_names(model) == want["qat"] and ref.fp32_names(model) == want["fp32"]
    if want["hessians"] is not None:
        assert ref.hessian_names(model, cfg) == want["hessians"]


@pytest.mark.parametrize("name", ["smoke", "baseline_small",
                                  pytest.param("transformer_gptq_grouped", marks=pytest.mark.slow)])  # GPTQ: ~100 s here
def test_transformer_artifacts_are_byte_identical_to_before_roles(name):
    ref, golden = _reference_module(), json.loads((GOLDEN / "roles_reference.json").read_text())
    got = ref.export_digest(*ref.EXPORTS[name])
    want = json.loads(re.sub(r"blocks\.(\d+)\.attn\.", r"blocks.\1.mixer.", json.dumps(golden["exports"][name])))
    assert got == want
