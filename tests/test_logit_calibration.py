"""Issue 15 item 2: logit calibration (challenge-spec §5.13). The token features, the affine map
and its C2 property, the fit on training tokens of the quantized model (it lowers their loss),
and the artifact: its tensors stored and counted, the reloaded file scoring as the in-memory model."""
import json
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch
import torch.nn.functional as F

from conftest import CASEOPS_MODEL, tiny_config
from pgolf.data.tokenizer import load_tokenizer
from pgolf.eval.evaluator import evaluate
from pgolf.eval.scoring import model_from_artifact, model_from_decoded
from pgolf.export.export import build_artifact, write_export
from pgolf.metric.token_features import FEATURES, NUM_FEATURES, piece_features, token_feature_codes
from pgolf.metric.valset import load_val_set
from pgolf.model import GPT
from pgolf.model.logit_calibration import LogitCalibration, attach_calibration
from pgolf.train.logit_calibration import calibrate_artifact, first_train_tokens, fit_logit_calibration
from pgolf.train.trainer import run_training

LENGTHS = {"len0", "len1", "len2_3", "len4_6", "len7_plus"}


def bits(codes):
    return (np.asarray(codes, dtype=np.int64)[:, None] >> np.arange(NUM_FEATURES)) & 1


# ---------------------------------------------------------------------------------------
# Features


def test_token_features_of_a_real_vocabulary(own_tokenizer):
    sp = load_tokenizer(own_tokenizer.path).sp
    codes = token_feature_codes(sp, table_size=sp.vocab_size() + 3)
    assert NUM_FEATURES == 14 and codes.dtype == np.int16 and codes.shape == (sp.vocab_size() + 3,)
    f = bits(codes)
    assert (f[sp.vocab_size():] == 0).all()  # padded ids: no feature
    length = [FEATURES.index(n) for n in sorted(LENGTHS)]
    assert (f[: sp.vocab_size(), length].sum(1) == 1).all()  # exactly one length bucket each
    for i in range(sp.vocab_size()):
        piece = sp.id_to_piece(i)
        names = set(piece_features(sp, i))
        if sp.is_control(i) or sp.is_unknown(i):
            assert names == {"len0", "special"}
            continue
        assert ("leading_space" in names) == piece.startswith("\u2581"), piece
        text = piece.removeprefix("\u2581")
        if text.isalpha():
            assert "alpha" in names and ("capitalized" in names) == text[0].isupper(), piece
        if text.isdigit():
            assert "digit" in names


def test_token_features_of_the_caseops_vocabulary():
    if not CASEOPS_MODEL.is_file():
        pytest.skip(f"{CASEOPS_MODEL} not present (../shared)")
    sp = spm.SentencePieceProcessor(model_file=str(CASEOPS_MODEL))
    assert set(piece_features(sp, 4)) == {"len2_3", "special"}  # U+E001 TITLE: an operator, not punctuation
    assert set(piece_features(sp, 8 + 10)) == {"len1", "byte", "newline"}  # <0x0A>
    assert set(piece_features(sp, 8133)) == {"len0", "leading_space"}  # the bare ▁ (§5.1)
    assert bits(token_feature_codes(sp))[:, FEATURES.index("leading_space")].sum() == 4188  # §5.1


# ---------------------------------------------------------------------------------------
# The map


def calibration(seed=0, vocab=64):
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 1 << NUM_FEATURES, (vocab,), generator=gen).to(torch.int16)
    return LogitCalibration(codes, NUM_FEATURES)


def test_calibration_is_the_identity_at_init_and_its_formula_after():
    calib = calibration()
    z = torch.randn(3, 7, 64)
    assert torch.equal(calib(z), z)
    with torch.no_grad():
        calib.tau.fill_(0.9)
        calib.weight.copy_(torch.linspace(-1, 1, NUM_FEATURES))
    f = torch.from_numpy(bits(calib.codes.numpy())).double()
    expected = 0.9 * z.double() + f @ calib.weight.double()
    torch.testing.assert_close(calib(z).double(), expected, rtol=1e-6, atol=1e-6)


TINY_MODEL = ["model.num_layers=2", "model.model_dim=32", "model.num_heads=2", "model.num_kv_heads=1",
              "model.vocab_size=64"]


def tiny_model(seed=0):
    from pgolf.config import load_config

    torch.manual_seed(seed)
    return GPT(load_config("smoke", TINY_MODEL, env={}).model).eval()


def test_calibrated_probabilities_sum_to_one_over_the_vocabulary():
    """C2 at sampled positions: the calibrated model's full softmax sums to 1, and the CE the
    model reports is that distribution's (calibration applied in forward as in logits)."""
    model, calib = tiny_model(), calibration(1)
    with torch.no_grad():
        calib.tau.fill_(1.3)
        calib.weight.normal_(0, 2.0)
    attach_calibration(model, calib)
    ids = torch.randint(0, 64, (2, 33), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logp = torch.log_softmax(model.logits(model.hidden(ids[:, :-1])).double(), dim=-1)
        nll = model(ids[:, :-1], ids[:, 1:], reduction="none").view(2, 32)
    for b, t in [(0, 0), (0, 17), (1, 5), (1, 31)]:
        assert abs(float(logp[b, t].exp().sum()) - 1.0) < 1e-12
        assert abs(float(nll[b, t]) + float(logp[b, t, ids[b, t + 1]])) < 1e-4
    assert not calib.tau.requires_grad and not calib.weight.requires_grad


# ---------------------------------------------------------------------------------------
# The fit and the artifact


def test_fitting_lowers_the_loss_of_the_fitted_tokens(tiny_data):
    """On a fresh tiny model (near-uniform logits) the per-feature biases learn the training
    tokens' feature frequencies: their CE falls."""
    from pgolf.config import ExportConfig

    data, tok_path = tiny_data
    sp = load_tokenizer(tok_path).sp
    model = GPT(tiny_config(tiny_data, "unused").model).eval()
    tokens = first_train_tokens(data, 3000, 1024)
    assert len(tokens) == 3001
    cfg = ExportConfig(logit_calib=True, logit_calib_lr=0.05, logit_calib_epochs=2, logit_calib_stride=32,
                       logit_calib_batch_seqs=4)
    fit = fit_logit_calibration(model, tokens, torch.from_numpy(token_feature_codes(sp, 1024)), cfg, seq_len=64)
    assert fit.tokens == 3000 and fit.steps == 2 * -(-(1 + -(-(3000 - 64) // 32)) // 4)

    def nll(m):
        x, y = tokens[:-1][: 46 * 64].view(46, 64), tokens[1:][: 46 * 64].view(46, 64)
        with torch.no_grad():
            return float(m(x, y))

    before = nll(model)
    attach_calibration(model, fit.calibration)
    after = nll(model)
    assert after < before - 0.05, (before, after)
    assert fit.nll_first == pytest.approx(before, abs=0.05)


def test_the_calibrated_artifact_stores_counts_and_scores_as_in_memory(tiny_data, tmp_path):
    """The fit joins the artifact before it is written: its tensors are in the file (bytes
    counted), and the file, reloaded, scores exactly as the in-memory calibrated model."""
    cfg = tiny_config(tiny_data, tmp_path, "export.logit_calib=true", "export.logit_calib_tokens=1500",
                      "export.logit_calib_stride=32", "export.logit_calib_lr=0.05")
    torch.manual_seed(0)
    model = GPT(cfg.model)
    state = model.state_dict()
    params = sum(t.numel() for t in state.values())
    plain = build_artifact(state, cfg.to_dict()["model"], cfg.export)
    plain_report = write_export(plain, cfg.export, tmp_path / "plain.pgolf", params)
    art = build_artifact(state, cfg.to_dict()["model"], cfg.export)
    fit = calibrate_artifact(art, cfg, torch.device("cpu"))
    assert {"calibration.tau", "calibration.weight", "calibration.codes"} <= set(art.tensors)
    in_memory = model_from_decoded(art, torch.device("cpu"))
    assert torch.equal(in_memory.calibration.weight, fit.calibration.weight)
    report = write_export(art, cfg.export, tmp_path / "calib.pgolf", params)
    assert report.artifact_bytes == (tmp_path / "calib.pgolf").stat().st_size > plain_report.artifact_bytes
    reloaded, _ = model_from_artifact(tmp_path / "calib.pgolf", torch.device("cpu"))
    assert isinstance(reloaded.calibration, LogitCalibration)
    val = load_val_set(cfg.data.path, load_tokenizer(cfg.data.tokenizer))
    a, b = evaluate(in_memory, val, 64), evaluate(reloaded, val, 64)
    assert a.val_loss == b.val_loss and a.val_bpb == b.val_bpb
    plain_model, _ = model_from_artifact(tmp_path / "plain.pgolf", torch.device("cpu"))
    assert evaluate(plain_model, val, 64).val_loss != a.val_loss


def test_the_trainer_fits_on_its_clock_and_scores_the_calibrated_file(tiny_data, tmp_path):
    result = run_training(tiny_config(tiny_data, tmp_path, "export.logit_calib=true",
                                      "export.logit_calib_tokens=1000", "export.logit_calib_stride=32"))
    events = [json.loads(line) for line in (Path(result.run_dir) / "metrics.jsonl").read_text().splitlines()]
    calib = next(e for e in events if e["event"] == "logit_calib")
    last_train = max(e["train_time_ms"] for e in events if e["event"] == "train")
    assert calib["tokens"] == 1000 and calib["seconds"] > 0
    assert calib["train_time_ms"] >= last_train + 1000 * calib["seconds"] - 1e-6  # on the training clock
    reloaded, _ = model_from_artifact(result.export.path, torch.device("cpu"))
    assert isinstance(reloaded.calibration, LogitCalibration)
    assert abs(float(reloaded.calibration.tau) - calib["tau"]) < 1e-6 and float(reloaded.calibration.tau) != 1.0
