"""Issue 14 item 6: the record_1855 and frontier presets build the records' exact parameter layouts
(challenge-spec §5.2, frontier-spec F2/F11.2), list only their differences, and the pieces that
layout needed: the lanes' lambdas stored per model (one tensor each) and AsymLogit's two scalars.
Their CPU-scaled golden curves are in test_golden.py."""
import copy
import tomllib

import pytest
import torch

from pgolf.config import PRESET_DIR, ExportConfig, from_dict, get, load_config
from pgolf.export.artifact import decode_artifact, encode_artifact
from pgolf.export.export import build_artifact
from pgolf.model import GPT
from pgolf.model.roles import param_roles
from pgolf.model.softcap import AsymSoftcap, Softcap
from pgolf.optim.build import build_optimizers
from pgolf.quant.encoding import dequantize_state_dict


def meta_model(preset, *overrides):
    cfg = load_config(preset, list(overrides), env={})
    with torch.device("meta"):
        return GPT(cfg.model)


def count_by_kind(model):
    roles, out = param_roles(model), {}
    for name, p in model.named_parameters():
        out[roles[name].kind] = out.get(roles[name].kind, 0) + p.numel()
    return out


@pytest.mark.parametrize("preset, total, controls", [("record_1855", 35_945_671, 31_943),
                                                     ("frontier", 35_945_673, 31_945)])
def test_presets_build_the_records_exact_parameter_counts(preset, total, controls):
    """§5.2: embedding 4,194,304 + 11 × 2,883,584 matrix values + 31,943 controls (gates included);
    the frontier adds softcap_pos and softcap_neg (F2)."""
    model = meta_model(preset)
    assert sum(p.numel() for p in model.parameters()) == total
    kinds = count_by_kind(model)
    assert kinds.pop("embedding") == 4_194_304 and kinds.pop("matrix") == 11 * 2_883_584
    assert kinds == {"control": controls - 11 * 8 * 12 - 12, "gate": 11 * 8 * 12 + 12}


def _flatten(table, prefix=""):
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("preset", ["record_1855", "frontier"])
def test_presets_list_only_their_differences(preset):
    table = tomllib.loads((PRESET_DIR / f"{preset}.toml").read_text())
    parent = load_config(table.pop("extends"), env={})
    same = [key for key, value in _flatten(table) if get(parent, key) == value]
    assert not same, f"{preset} repeats what it extends: {same}"


# ---------------------------------------------------------------------------------------
# The lanes' lambdas: one [L, 2] and one [L, 2, 2] tensor, as the record stores them

LANES = ["model.num_layers=11", "model.model_dim=32", "model.num_heads=2", "model.num_kv_heads=1",
         "model.vocab_size=64", "model.mlp_mult=2", "model.stack.parallel_start=8"]


def lanes_model(seed=0):
    torch.manual_seed(seed)
    model = GPT(load_config("smoke", LANES, env={}).model)
    with torch.no_grad():  # off the identity init, so the lanes' mixing shows in the output
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_each_parallel_block_reads_its_own_row_and_no_other():
    model = lanes_model()
    ids = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(1))
    lam = model.parallel
    assert lam.resid_lambdas.shape == (11, 2) and lam.post_lambdas.shape == (11, 2, 2)
    for layer in (8, 9, 10):
        assert model.blocks[layer].resid_lambdas.data_ptr() == lam.resid_lambdas[layer].data_ptr()
    with torch.no_grad():
        before = model.hidden(ids)
        lam.resid_lambdas[:8] += 5.0  # the rows of single-lane layers: in the layout, never read
        lam.post_lambdas[:8] -= 3.0
        assert torch.equal(model.hidden(ids), before)
        lam.post_lambdas[9, 1, 0] += 0.5  # P[mlp -> lane0] of layer 9
        assert not torch.allclose(model.hidden(ids), before, atol=1e-4)


def test_the_lambdas_have_one_owner_through_copies_casts_and_loads():
    """The blocks' link to the model's lambdas survives deepcopy, .to(dtype) and assign-loads, and
    the state dict holds each tensor once."""
    model = lanes_model()
    keys = [k for k in model.state_dict() if "lambdas" in k]
    assert keys == ["parallel.resid_lambdas", "parallel.post_lambdas"]
    twin = copy.deepcopy(model).double()
    assert twin.blocks[9]._lambdas[0] is twin.parallel and twin.blocks[9].resid_lambdas.dtype == torch.float64
    fresh = {k: v.clone() + 1.0 if "lambdas" in k else v for k, v in model.state_dict().items()}
    model.load_state_dict(fresh, assign=True)
    assert torch.equal(model.blocks[9].post_lambdas, fresh["parallel.post_lambdas"][9])


# ---------------------------------------------------------------------------------------
# AsymLogit Rescale (frontier-spec F2)


def test_asym_softcap_formula_and_its_identity_at_init():
    z = torch.randn(4, 50, dtype=torch.float64) * 40
    cap = AsymSoftcap(30.0).double()
    torch.testing.assert_close(cap(z), Softcap(30.0)(z), rtol=0, atol=0)  # s+ = s- = 30: the symmetric cap
    with torch.no_grad():
        cap.pos.fill_(20.0)
        cap.neg.fill_(45.0)
    expected = torch.where(z >= 0, 20 * torch.tanh(z / 20), 45 * torch.tanh(z / 45))
    torch.testing.assert_close(cap(z), expected, rtol=1e-12, atol=1e-12)
    assert cap(torch.zeros(1, dtype=torch.float64)).item() == 0.0


def test_asym_logit_is_inert_in_training_as_the_records_ran_it():
    """F2: the scalars never move (no gradient, no decay), and the model's loss equals the symmetric one."""
    over = ["model.num_layers=2", "model.model_dim=32", "model.num_heads=2", "model.num_kv_heads=1",
            "model.vocab_size=64", "optim.adam_wd=0.5"]
    torch.manual_seed(0)
    asym = GPT(load_config("smoke", [*over, "model.asym_logit=true"], env={}).model)
    torch.manual_seed(0)
    plain = GPT(load_config("smoke", over, env={}).model)
    roles = param_roles(asym)
    assert roles["softcap.pos"].kind == roles["softcap.neg"].kind == "control"
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(3))
    assert torch.equal(asym(ids, ids), plain(ids, ids))
    optimizers, _ = build_optimizers(asym, load_config("smoke", over, env={}).optim)
    asym(ids, ids).backward()
    for opt in optimizers:
        opt.step()
    assert asym.softcap.pos.grad is None and asym.softcap.pos.item() == asym.softcap.neg.item() == 30.0


def test_asym_logit_scalars_round_trip_through_the_artifact():
    cfg = load_config("smoke", ["model.num_layers=2", "model.model_dim=32", "model.num_heads=2",
                                "model.num_kv_heads=1", "model.vocab_size=64", "model.asym_logit=true"], env={})
    model = GPT(cfg.model)
    art = build_artifact(model.state_dict(), cfg.to_dict()["model"], ExportConfig(method="rtn"))
    back = decode_artifact(encode_artifact(art, "plain", "zlib")[0])
    rebuilt = GPT(from_dict({"model": back.model_config}, "artifact").model)
    rebuilt.load_state_dict(dequantize_state_dict(back.tensors), strict=True)
    assert rebuilt.softcap.pos.item() == rebuilt.softcap.neg.item() == 30.0 and not rebuilt.softcap.pos.requires_grad
