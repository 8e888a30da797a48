"""Issue 14 item 1, the wiring side (spec §5.3, §5.5, §5.6): the input-gated SmearGate with its
BOS mask, LN scale, gated U-Net skips, depth recurrence and parallel residual lanes, each
against a hand-written reference of its formula, the identity at init, with its roles declared,
bit-identical to today's model when off, and causal."""
import pytest
import torch
import torch.nn.functional as F

from attention_reference import DenseReference, use_backend
from pgolf.config import load_config
from pgolf.model import GPT
from pgolf.model.embeddings import InputGatedSmearGate
from pgolf.model.roles import param_roles

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
    if busy:
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
