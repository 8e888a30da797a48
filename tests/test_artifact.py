
import numpy as np
import pytest
import torch

from pgolf.config import ExportConfig, from_dict, load_config
from pgolf.data.encode import document_tokens
from pgolf.errors import PgolfError
from pgolf.eval.evaluator import evaluate
from pgolf.export import codecs
from pgolf.export import export as export_mod
from pgolf.export.artifact import ArtifactError, decode_artifact, encode_artifact, read_artifact
from pgolf.export.code_size import count_code_bytes
from pgolf.export.pack import code_files, pack
from pgolf.export.export import ArtifactTooLarge, build_artifact
from pgolf.export.offline import export_model, load_artifact_state
from pgolf.quant.encoding import dequantize_state_dict
from pgolf.quant.recipe import quantize_state
from pgolf.metric.bytes import ByteLUT
from pgolf.metric.valset import ValSet
from pgolf.model import GPT, param_roles
from pgolf.model.roles import CONTROL, matrix


@pytest.fixture(scope="module")
def trained_like():
    """A small model with non-trivial weights (random, not zero-init)."""
    torch.manual_seed(0)
    cfg = load_config("smoke", ["model.num_layers=2", "model.model_dim=256"], env={})  # fc: 512x256 > 65,536
    model = GPT(cfg.model)
    for p in model.parameters():
        if p.ndim == 2:
            torch.nn.init.normal_(p, std=0.02)
    return model, cfg


def rtn(bits=8, **kw):
    return ExportConfig(method="rtn", matrix_bits=bits, embed_bits=8, **kw)


def test_int8_matches_the_baseline_formula():
    w = torch.randn(300, 400, generator=torch.Generator().manual_seed(1)) * 0.1
    w[3, 7] = 5.0  # an outlier that the per-row percentile clips
    e = quantize_state({"w": w}, rtn(), {"w": matrix("attn.c_q", "attn")})["w"]
    clip = torch.quantile(w.abs(), 0.9999984, dim=1)
    scale = (clip / 127).clamp_min(1 / 127)
    q = torch.clamp(torch.round(torch.clamp(w, -clip[:, None], clip[:, None]) / scale[:, None]), -127, 127)
    assert (e.scheme, e.bits) == ("int_row", 8) and np.array_equal(e.parts["q"], q.to(torch.int8).numpy())
    assert np.array_equal(e.parts["scale"], scale.to(torch.float16).numpy())


def test_small_and_control_tensors_pass_through():
    state = {"blocks.0.attn_scale": torch.rand(512), "tiny.weight": torch.rand(16, 16), "ids": torch.arange(5)}
    enc = quantize_state(state, rtn(), {"blocks.0.attn_scale": CONTROL, "tiny.weight": matrix("tiny", "other")})
    assert enc["blocks.0.attn_scale"].parts["data"].dtype == np.float32  # control: exact
    assert enc["tiny.weight"].parts["data"].dtype == np.float16
    assert enc["ids"].parts["data"].dtype == np.int64
    back = dequantize_state_dict(enc)
    assert torch.equal(back["blocks.0.attn_scale"], state["blocks.0.attn_scale"]) and torch.equal(back["ids"], state["ids"])
    assert back["tiny.weight"].dtype == torch.float32


def test_int6_codes_and_error(trained_like):
    model, _ = trained_like
    state, roles = model.state_dict(), param_roles(model)
    enc6, enc8 = quantize_state(state, rtn(6), roles), quantize_state(state, rtn(8), roles)
    name = "blocks.0.mlp.fc.weight"
    assert (enc6[name].scheme, enc6[name].bits) == ("int_row", 6) and np.abs(enc6[name].parts["q"]).max() <= 31
    assert enc6["tok_emb.weight"].bits == 8  # embed_bits
    err6 = (dequantize_state_dict(enc6)[name] - state[name]).pow(2).mean()
    err8 = (dequantize_state_dict(enc8)[name] - state[name]).pow(2).mean()
    assert err8 < err6 < 40 * err8


# lrzip is a system binary, not a wheel: where it is absent its cases are skipped with a reason
# (never dropped silently); .ci/run installs it, so CI still runs them.
NEEDS_LRZIP = pytest.mark.skipif(not codecs.lrzip_available(), reason="the lrzip binary is not on PATH (.ci/run installs it)")


def codec_param(*values, id: str):
    return pytest.param(*values, id=id, marks=NEEDS_LRZIP if values[0] == "lrzip" else ())


# Every codec through the grouped layout (the one with transforms), and the plain layout once.
CASES = [codec_param(c, "grouped", id=f"{c}-grouped") for c in codecs.CODECS] + [
    codec_param("auto", "grouped", id="auto-grouped"), codec_param("zlib", "plain", id="zlib-plain")]


@pytest.mark.parametrize("codec, layout", CASES)
def test_artifact_roundtrip_is_bitwise_for_every_codec_and_layout(trained_like, codec, layout):
    model, cfg = trained_like
    state = {**model.state_dict(), "extra.scale": torch.tensor(0.05)}  # a 0-d tensor must stay 0-d
    art = build_artifact(state, cfg.to_dict()["model"], rtn(6, lqer_top=2),
                         roles={**param_roles(model), "extra.scale": CONTROL})
    blob, streams = encode_artifact(art, layout, codec)
    back = decode_artifact(blob)
    assert back.model_config == art.model_config
    if codec != "auto":
        assert {s.codec for s in streams} == {"zlib", codec}  # the index is always zlib
    for name, e in art.tensors.items():
        got = back.tensors[name]
        assert (got.scheme, got.dtype, got.shape, got.bits) == (e.scheme, e.dtype, e.shape, e.bits)
        assert set(got.parts) == set(e.parts)
        for part, arr in e.parts.items():
            assert got.parts[part].dtype == arr.dtype and np.array_equal(got.parts[part], arr), (name, part)


def test_damaged_files_never_load(trained_like, tmp_path):
    model, cfg = trained_like
    blob, _ = encode_artifact(build_artifact(model.state_dict(), cfg.to_dict()["model"], rtn()))
    for at in (10, len(blob) // 2, len(blob) - 5):
        bad = bytearray(blob)
        bad[at] ^= 0x40
        with pytest.raises(ArtifactError, match="checksum mismatch|bad magic"):
            decode_artifact(bytes(bad))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        decode_artifact(blob[:-100] + blob[-32:])
    import hashlib
    body = blob[:-132]  # truncated, but with a matching checksum: the stream table no longer adds up
    with pytest.raises(ArtifactError, match="do not add up|malformed"):
        decode_artifact(body + hashlib.sha256(body).digest())
    with pytest.raises(ArtifactError, match="not a pgolf artifact"):
        decode_artifact(b"\x80\x04\x95" + blob[3:])  # a pickle's opening bytes
    with pytest.raises(ArtifactError, match="does not exist"):
        read_artifact(tmp_path / "none.pgolf")


@pytest.mark.parametrize("codec", [codec_param(c, id=c) for c in codecs.CODECS])
def test_decompression_is_bounded(codec):
    blob = codecs.compress(codec, b"\0" * 100_000)
    with pytest.raises(PgolfError, match="inflates beyond|declares more than"):
        codecs.decompress(codec, blob, max_bytes=10_000)
    with pytest.raises(PgolfError):
        codecs.decompress(codec, blob[: len(blob) // 2])


def test_a_file_whose_tensors_do_not_fit_their_shapes_is_rejected(trained_like):
    model, cfg = trained_like
    art = build_artifact(model.state_dict(), cfg.to_dict()["model"], rtn())
    name = "blocks.0.mlp.fc.weight"
    art.tensors[name].shape = (3, 3)  # the stored codes no longer fit
    with pytest.raises(ArtifactError, match=f"tensor {name}: part q has shape .*, expected \\(3, 3\\)"):
        decode_artifact(encode_artifact(art)[0])
    art = build_artifact(model.state_dict(), cfg.to_dict()["model"], rtn())
    art.tensors[name].dtype = "object"
    with pytest.raises(ArtifactError, match="unknown dtype 'object'"):
        decode_artifact(encode_artifact(art)[0])


def test_a_well_checksummed_file_with_a_bad_index_is_rejected():
    import hashlib
    import struct
    import zlib

    index = zlib.compress(b'{"tensors' + b"\0" * 16)
    from pgolf.export.artifact import VERSION

    head = (b"PGOLFART" + struct.pack("<HH", VERSION, 1) + struct.pack("<B", 5) + b"index" + struct.pack("<B", 4) + b"zlib"
            + struct.pack("<Q", len(index)) + index)
    with pytest.raises(ArtifactError, match="malformed artifact"):
        decode_artifact(head + hashlib.sha256(head).digest())


def test_export_enforces_the_limit_and_reports_bytes(trained_like, tmp_path, monkeypatch):
    model, cfg = trained_like
    path = tmp_path / "m.pgolf"
    fixed = {"created_utc": "2026-01-01T00:00:00+00:00"}  # a timestamp's bytes compress to varying sizes
    report, _ = export_model(model.state_dict(), cfg.to_dict()["model"], rtn(), path, meta=fixed)
    run_cfg = from_dict({"model": cfg.to_dict()["model"], "export": cfg.to_dict()["export"] | {"method": "rtn"}}, "t")
    _, files, raw = code_files(run_cfg)  # the run's import closure, its native sources and its recipe
    assert {name.split("/")[0] for name in files} == {"pgolf", "pgolf_kernels"}  # rtn, no late QAT: no pgolf._C
    assert "pgolf/configs/recipe.toml" in files and "pgolf/model/gdn.py" not in files
    assert report.artifact_bytes == path.stat().st_size
    assert report.code_bytes == raw and report.code_mode == "raw"
    assert report.total_bytes == report.artifact_bytes + report.code_bytes < 16_000_000

    monkeypatch.setattr(export_mod, "SIZE_LIMIT", report.total_bytes)  # exactly at the limit is too large
    with pytest.raises(ArtifactTooLarge, match="not exported: .* which is not below the"):
        export_model(model.state_dict(), cfg.to_dict()["model"], rtn(), tmp_path / "big.pgolf", meta=fixed)
    assert not (tmp_path / "big.pgolf").exists()


def test_wrapped_code_is_what_pgolf_submit_ships(tmp_path, monkeypatch):
    """export.code_bytes="wrapped" counts the packed train_gpt.py of the run's config (one function, no estimate);
    a packed script counts its own file."""
    from pgolf.export import code_size

    cfg = load_config("baseline", env={})
    wrapped = count_code_bytes("wrapped", cfg)
    assert wrapped.counted_bytes == len(pack(cfg).script) < count_code_bytes("raw", cfg).counted_bytes
    script = tmp_path / "train_gpt.py"
    script.write_bytes(b"x" * 1234)
    monkeypatch.setattr(code_size, "PACKED_SCRIPT", str(script))
    assert count_code_bytes("wrapped", cfg).counted_bytes == count_code_bytes("raw", cfg).counted_bytes == 1234


def test_eval_of_the_reloaded_file_equals_the_in_memory_quantized_model(trained_like, tmp_path, own_tokenizer,
                                                                       heldout_docs):
    model, cfg = trained_like
    tokens = np.concatenate([document_tokens(own_tokenizer, d) for d in heldout_docs[:4]])
    lut = ByteLUT.from_sentencepiece(own_tokenizer.sp)
    val = ValSet(torch.from_numpy(tokens.astype(np.int32)), lut.position_bytes(torch.from_numpy(tokens)), "lut", 1)
    export_cfg = rtn(6, codec="lzma", layout="grouped", lqer_top=2)

    in_memory = GPT(cfg.model)
    in_memory.load_state_dict(dequantize_state_dict(quantize_state(model.state_dict(), export_cfg, param_roles(model))))
    report, _ = export_model(model.state_dict(), cfg.to_dict()["model"], export_cfg, tmp_path / "m.pgolf")
    model_cfg, state = load_artifact_state(report.path)
    reloaded = GPT(from_dict({"model": model_cfg}, "test").model)
    reloaded.load_state_dict(state)
    for name, t in in_memory.state_dict().items():
        assert torch.equal(t, reloaded.state_dict()[name]), name
    a = evaluate(in_memory, val, 64, 0, windows_per_batch=4)
    b = evaluate(reloaded, val, 64, 0, windows_per_batch=4)
    assert a == b  # bitwise: same sums, same counts
    assert a != evaluate(model, val, 64, 0, windows_per_batch=4)  # and quantization did change something


def test_older_and_newer_format_versions_are_clear_errors(trained_like):
    """Format 3 renamed blocks.N.attn.* to blocks.N.mixer.*: a version-2 file (even with a valid
    checksum) is refused with the reason, never half-loaded into the renamed model."""
    import hashlib
    import struct

    from pgolf.export.artifact import MAGIC, VERSION

    model, cfg = trained_like
    assert VERSION == 3 and any(".mixer." in name for name in model.state_dict())
    blob, _ = encode_artifact(build_artifact(model.state_dict(), cfg.to_dict()["model"], rtn()))
    for version, message in ((2, "version 2 was written by an older pgolf .*blocks.N.attn"), (4, "newer than")):
        body = bytearray(blob[:-32])
        struct.pack_into("<H", body, len(MAGIC), version)
        with pytest.raises(ArtifactError, match=message):
            decode_artifact(bytes(body) + hashlib.sha256(body).digest())
