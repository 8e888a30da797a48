"""Quantization: bit packing, GPTQ against round-to-nearest on real activations, LQER, the recipe."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import tiny_config
from pgolf.config import ExportConfig, from_dict
from pgolf.model import Role, roles_for_config
from pgolf.model.roles import CONTROL, GATE, matrix
from pgolf.ops.quantize import codes_for, sdclip_scale
from pgolf.quant.encoding import decode
from pgolf.quant.gptq import gptq_codes
from pgolf.quant.lqer import lqer_correction, lqer_parts
from pgolf.quant.packing import pack, packed_row_bytes, unpack
from pgolf.quant.recipe import quantize_state
from pgolf.train.checkpoint_read import load_checkpoint
from pgolf.train.trainer import run_training


@given(bits=st.sampled_from([6, 7, 8]), rows=st.integers(1, 5), k=st.integers(1, 70), seed=st.integers(0, 2**16))
@settings(max_examples=300, deadline=None)
def test_pack_unpack_is_exact(bits, rows, k, seed):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    codes = np.random.default_rng(seed).integers(lo, hi + 1, size=(rows, k)).astype(np.int8)
    packed = pack(codes, bits)
    assert packed.dtype == np.uint8 and packed.shape == (rows, packed_row_bytes(k, bits))
    assert np.array_equal(unpack(packed, bits, k), codes)


def test_int6_layout_is_four_codes_in_three_bytes():
    codes = np.array([[-32, 31, 0, -1]], dtype=np.int8)  # biased: 0, 63, 32, 31
    word = 0 | 63 << 6 | 32 << 12 | 31 << 18
    assert pack(codes, 6).tolist() == [[word & 0xFF, word >> 8 & 0xFF, word >> 16 & 0xFF]]
    assert packed_row_bytes(512, 6) == 384 and packed_row_bytes(512, 7) == 448 and packed_row_bytes(5, 6) == 6
    with pytest.raises(ValueError, match="cannot be packed in 6 bits"):
        pack(np.array([32], dtype=np.int8), 6)


@pytest.fixture(scope="module")
def gptq_run(tmp_path_factory, tiny_data):
    """A tiny model trained on real text, and the input Hessians GPTQ collected after it."""
    out = tmp_path_factory.mktemp("gptq")
    result = run_training(tiny_config(tiny_data, out, "train.iterations=30", "train.warmdown_iters=0",
                                      "export.method=gptq", "export.matrix_bits=6", "export.calib_batches=4",
                                      "model.model_dim=256"))  # its MLP matrices exceed the 65,536 passthrough
    state = load_checkpoint(result.run_dir / "checkpoint.pt")
    return result, state["model"], state["hessians"]


def output_error(w, w_hat, h):
    d = (w - w_hat).double()
    return float(torch.einsum("ij,jk,ik->", d, h.double(), d))


def test_gptq_beats_round_to_nearest_on_real_activations(gptq_run):
    _, weights, hessians = gptq_run
    names = [n for n in hessians if n.startswith("blocks.")]
    assert len(names) == 2 * 6  # q, k, v, proj, fc, mlp proj of each block
    wins = 0
    for name in names:
        w, h = weights[name].float(), hessians[name]
        scale = sdclip_scale(w, 6, 12.0).float()
        rtn = codes_for(w, scale, 6).float() * scale[:, None]
        gptq = gptq_codes(w, h, scale, 6).float() * scale[:, None]
        if output_error(w, gptq, h) < output_error(w, rtn, h):
            wins += 1
    assert wins == len(names), f"GPTQ lowered the layer-output error on {wins} of {len(names)} matrices"


def test_gptq_run_collects_hessians_on_the_training_clock(gptq_run):
    result, _, hessians = gptq_run
    events = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    hess = next(e for e in events if e["event"] == "hessians")
    assert hess["matrices"] == len(hessians) == 2 * 6 + 1  # + the tied head's input, for tok_emb
    assert hess["train_time_ms"] == pytest.approx(result.train_time_ms)  # counted as training time
    for h in hessians.values():
        assert torch.allclose(h, h.T, atol=1e-5) and torch.linalg.eigvalsh(h.double()).min() > -1e-5


def test_lqer_reduces_the_error_of_the_worst_tensors(gptq_run):
    result, weights, _ = gptq_run
    roles = roles_for_config(from_dict(load_checkpoint(result.run_dir / "checkpoint.pt")["config"], "ckpt").model)
    cfg = ExportConfig(method="rtn", matrix_bits=6, lqer_top=2, lqer_rank=4)
    enc = quantize_state(weights, cfg, roles)
    with_lqer = [n for n, e in enc.items() if e.has_lqer]
    assert len(with_lqer) == 2
    plain = quantize_state(weights, ExportConfig(method="rtn", matrix_bits=6), roles)
    errors = {n: float((weights[n].float() - decode(e).float()).norm()) for n, e in plain.items() if e.scheme == "int_row"}
    assert set(with_lqer) == set(sorted(errors, key=errors.get)[-2:])  # the two largest errors
    for n in with_lqer:
        assert float((weights[n].float() - decode(enc[n]).float()).norm()) < errors[n]
        assert enc[n].parts["lqer_a"].min() >= -2 and enc[n].parts["lqer_a"].max() <= 1
        assert enc[n].parts["lqer_b"].min() >= -8 and enc[n].parts["lqer_b"].max() <= 7


def test_lqer_factors_reconstruct_a_low_rank_error():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(64, 4, generator=g, dtype=torch.float64) @ torch.randn(4, 128, generator=g, dtype=torch.float64)
    approx = lqer_correction(lqer_parts(e, 4), (64, 128)).double()
    # int2 A (four levels, one scale) and int4 B are coarse: measured 0.62 of the norm left here
    assert float((e - approx).norm() / e.norm()) < 0.7


@pytest.mark.parametrize("size", [0.0, 1e-9])
def test_lqer_of_a_vanishing_error_is_a_zero_correction(size):
    e = torch.ones(64, 128, dtype=torch.float64) * size  # scales would round to 0 in fp16 without a floor
    parts = lqer_parts(e, 4)
    assert all(np.isfinite(p.astype(np.float64)).all() for p in parts.values())
    assert torch.isfinite(lqer_correction(parts, (64, 128))).all()


def test_recipe_assigns_each_tensor_its_treatment():
    g = torch.Generator().manual_seed(0)
    state = {"tok_emb.weight": torch.randn(1024, 128, generator=g), "blocks.0.mlp.fc.weight": torch.randn(512, 256, generator=g),
             "blocks.0.attn.q_gain": torch.rand(8, generator=g), "blocks.0.attn.gate.weight": torch.randn(8, 12, generator=g),
             "blocks.0.mlp.proj.weight": torch.randn(128, 64, generator=g)}
    roles = {"tok_emb.weight": Role("embedding", group="tok_emb", tied=True), "blocks.0.attn.q_gain": CONTROL,
             "blocks.0.mlp.fc.weight": matrix("mlp.fc", "mlp"), "blocks.0.attn.gate.weight": GATE,
             "blocks.0.mlp.proj.weight": matrix("mlp.proj", "mlp")}
    enc = quantize_state(state, ExportConfig(method="rtn", matrix_bits=6, embed_bits=7), roles)
    assert (enc["tok_emb.weight"].scheme, enc["tok_emb.weight"].bits) == ("int_row", 7)
    assert (enc["blocks.0.mlp.fc.weight"].scheme, enc["blocks.0.mlp.fc.weight"].bits) == ("int_row", 6)
    assert enc["blocks.0.attn.q_gain"].parts["data"].dtype == np.float32  # control: kept exactly
    assert (enc["blocks.0.attn.gate.weight"].scheme, enc["blocks.0.attn.gate.weight"].bits) == ("int_row", 8)
    assert enc["blocks.0.mlp.proj.weight"].parts["data"].dtype == np.float16  # small: passthrough
    with pytest.raises(Exception, match="needs Hessians"):
        from pgolf.export.export import build_artifact
        build_artifact(state, {}, ExportConfig(method="gptq"))
