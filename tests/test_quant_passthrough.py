"""Control tensors and the SmearGate's gate as fp16 passthrough, as the records store them (spec §5.11),
chosen by parameter role; the quant gate switch (GATED_ATTN_QUANT_GATE, frontier F7.3)."""
import numpy as np
import pytest
import torch

from pgolf.config import load_config
from pgolf.export.artifact import decode_artifact, encode_artifact
from pgolf.export.export import build_artifact
from pgolf.model import GPT
from pgolf.model.roles import FLOAT_GATE, GATE, Role, RoleError, param_roles
from pgolf.quant.encoding import decode

RECORDISH = ["model.num_layers=4", "model.model_dim=64", "model.num_heads=4", "model.num_kv_heads=2",
             "model.smear_gate=true", "model.smear_form=input_gated", "model.attention.sparse_gate=true",
             "model.stack.skip_gates=true", "model.stack.parallel_start=2"]


def recordish(*export):
    cfg = load_config("smoke", [*RECORDISH, *export], env={})
    torch.manual_seed(0)
    model = GPT(cfg.model)
    with torch.no_grad():  # off their init, so no tensor is trivially compressible
        for p in model.parameters():
            p.add_(torch.randn(p.shape) * 0.05)
    return model, cfg


def test_the_smear_gate_is_a_float_gate_and_the_attention_gate_a_rowmax_one():
    model, _ = recordish()
    roles = param_roles(model)
    assert roles["smear.gate.weight"] == FLOAT_GATE and roles["smear.gate.weight"].quant == "fp16"
    assert FLOAT_GATE.optimizer == GATE.optimizer == "scalar"  # the same training, another artifact form
    attn_gates = [n for n, r in roles.items() if r == GATE]
    assert attn_gates and all(r.quant == "int8_rowmax" for n, r in roles.items() if r == GATE)
    with pytest.raises(RoleError, match="only a gate"):
        Role("control", rowmax=False)


def encoded(*export):
    model, cfg = recordish(*export)
    state = {n: p.detach() for n, p in model.named_parameters()}
    art = build_artifact(state, cfg.to_dict()["model"], cfg.export, roles=param_roles(model))
    return model, art


@pytest.mark.parametrize("control_dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("quant_gate", [True, False])
def test_each_small_tensor_is_stored_as_its_role_and_the_export_say(control_dtype, quant_gate):
    model, art = encoded(f"export.control_dtype={control_dtype}", f"export.quant_gate={str(quant_gate).lower()}")
    roles = param_roles(model)
    controls = [n for n, r in roles.items() if r.kind == "control"]
    assert len(controls) > 10  # scales, mixes, q gains, skip weights and gates, lanes, the smear lambda
    for name in controls:
        data = art.tensors[name].parts["data"]
        assert data.dtype == (np.float32 if control_dtype == "fp32" else np.float16), name
        back = decode(art.tensors[name])
        assert back.dtype == torch.float32  # restored to the parameter's dtype
        p = model.get_parameter(name).detach()
        assert torch.equal(back, p if control_dtype == "fp32" else p.half().float()), name
    smear = art.tensors["smear.gate.weight"]
    assert smear.scheme == "raw" and smear.parts["data"].dtype == np.float16  # whatever the switches say
    for name in (n for n, r in roles.items() if r == GATE):
        e = art.tensors[name]
        assert (e.scheme, e.bits) == (("int_row", 8) if quant_gate else ("raw", 0)), name


def test_fp16_controls_cost_two_bytes_less_per_element_and_round_trip():
    sizes, raws = {}, {}
    for dtype in ("fp32", "fp16"):
        model, art = encoded(f"export.control_dtype={dtype}")
        blob, streams = encode_artifact(art, "plain", "zlib")
        back = decode_artifact(blob)
        for name, e in art.tensors.items():
            assert torch.equal(decode(back.tensors[name]), decode(e)), name
        sizes[dtype], raws[dtype] = len(blob), {s.name: s.raw_bytes for s in streams}["all"]
    n_control = sum(p.numel() for n, p in model.named_parameters() if param_roles(model)[n].kind == "control")
    assert raws["fp32"] - raws["fp16"] == 2 * n_control  # exactly the fp32 -> fp16 halving, nothing else
    assert sizes["fp16"] < sizes["fp32"]
