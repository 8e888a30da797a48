"""Byte weights for the training loss, and the model's three CE implementations."""
import numpy as np
import pytest
import torch

from conftest import CASEOPS_MODEL, tiny_config, train_losses
from pgolf.config import load_config
from pgolf.data.encode import document_tokens, encode_documents
from pgolf.data.tokenizer import load_tokenizer
from pgolf.metric.bytes import ByteLUT, TargetByteWeights
from pgolf.model import GPT
from pgolf.ops.reference import reference_softcapped_ce
from pgolf.train.trainer import run_training


def stream(tok, docs):
    return torch.from_numpy(np.concatenate([document_tokens(tok, d) for d in docs]))


def test_bytes_weights_are_the_canonical_credit(own_tokenizer, heldout_docs):
    t = stream(own_tokenizer, heldout_docs[:20])
    w = TargetByteWeights(own_tokenizer, "bytes")(t[:-1], t[1:])
    credit = ByteLUT.from_sentencepiece(own_tokenizer.sp).position_bytes(t)[1:].float()
    assert torch.equal(w, credit.clamp_min(1))
    bos = t[1:] == own_tokenizer.bos_id
    assert bos.any() and (credit[bos] == 0).all() and (w[bos] == 1).all()  # scored, so still trained


def test_pr1519_weights_drop_the_space_and_clamp(own_tokenizer, heldout_docs):
    t = stream(own_tokenizer, heldout_docs[:20])
    canonical = TargetByteWeights(own_tokenizer, "bytes")(t[:-1], t[1:])
    pr = TargetByteWeights(own_tokenizer, "bytes_pr1519")(t[:-1], t[1:])
    lut = ByteLUT.from_sentencepiece(own_tokenizer.sp)
    assert torch.equal(pr, lut.base_bytes[t[1:]].float().clamp_min(1))
    spaced = lut.has_leading_space[t[1:]] & ~lut.is_boundary[t[:-1]]
    assert spaced.any() and torch.equal(canonical[spaced], lut.base_bytes[t[1:]][spaced].float() + 1)
    assert (pr[t[1:] == own_tokenizer.bos_id] == 1).all()


def test_caseops_weights_track_the_sidecar(fineweb_docs):
    """CaseOps train shards have no sidecar; the operator-free piece LUT stands in for it."""
    if not CASEOPS_MODEL.is_file():
        pytest.skip("CaseOps model not in ../shared")
    tok = load_tokenizer(CASEOPS_MODEL)
    tokens, sidecar, _ = encode_documents(tok, fineweb_docs[:150], with_sidecar=True)
    t = torch.from_numpy(tokens.astype(np.int64))
    weights = TargetByteWeights(tok, "bytes")
    clamped = weights(t[:-1], t[1:])
    w = weights.lut.target_bytes(t[:-1], t[1:]).float()  # the credit before the clamp
    s = torch.from_numpy(sidecar[1:].astype(np.float32))
    assert torch.equal(clamped, w.clamp_min(1))
    ops = (t[1:] >= 4) & (t[1:] <= 7)
    assert ops.any() and (w[ops] == 0).all() and (clamped[ops] == 1).all()  # no original bytes, but scored
    assert abs(float(w.sum() - s.sum())) / float(s.sum()) < 1e-4  # whitespace runs / NFKC only
    assert float((w == s).float().mean()) > 0.99  # per token: byte-fallback runs spread differently


@pytest.mark.parametrize("ce", ["fused", "fused_linear"])
@pytest.mark.parametrize("weighted", [False, True])
def test_model_ce_implementations_agree(ce, weighted):
    torch.manual_seed(0)
    model = GPT(load_config("smoke", ["model.num_layers=2", "model.model_dim=64"], env={}).model)
    for p in model.parameters():
        if p.ndim == 2:
            torch.nn.init.normal_(p, std=0.05)
    x, y = torch.randint(0, 1024, (3, 20)), torch.randint(0, 1024, (3, 20))
    w = torch.randint(0, 5, (3, 20)).float() if weighted else None
    eager = model(x, y, weights=w)
    g_eager = torch.autograd.grad(eager, model.tok_emb.weight)[0]
    fused = model(x, y, weights=w, ce=ce)
    g_fused = torch.autograd.grad(fused, model.tok_emb.weight)[0]
    torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_fused, g_eager, rtol=1e-4, atol=1e-7)
    ref = reference_softcapped_ce(torch.nn.functional.linear(model.hidden(x), model.tok_emb.weight).reshape(-1, 1024),
                                  y.reshape(-1), None if w is None else w.reshape(-1), 30.0)
    torch.testing.assert_close(eager.double(), ref.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("overrides", [["train.ce=fused"], ["train.ce=fused_linear"]])
def test_training_with_the_fused_losses_matches_eager(tmp_path, tiny_data, overrides):
    eager = run_training(tiny_config(tiny_data, tmp_path, "run.name=eager", "train.iterations=5"))
    fused = run_training(tiny_config(tiny_data, tmp_path, "run.name=fused", "train.iterations=5", *overrides))
    fused_losses, eager_losses = train_losses(fused.run_dir), train_losses(eager.run_dir)
    assert len(fused_losses) == len(eager_losses) > 0
    for a, b in zip(fused_losses, eager_losses):
        assert abs(a - b) < 1e-4 * abs(b)


def test_training_with_byte_weights(tmp_path, tiny_data):
    plain = run_training(tiny_config(tiny_data, tmp_path, "run.name=plain", "train.iterations=5"))
    weighted = run_training(tiny_config(tiny_data, tmp_path, "run.name=w", "train.iterations=5",
                                        "train.loss_weights=bytes", "train.ce=fused_linear"))
    assert train_losses(weighted.run_dir)[0] != train_losses(plain.run_dir)[0]  # a different objective
    assert weighted.final.token_count == plain.final.token_count  # eval is unweighted either way
