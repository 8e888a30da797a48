import torch
import torch.nn.functional as F

from pgolf.config import load_config
from pgolf.model import GPT, prepare_for_device
from pgolf.model.layers import CastedLinear


def small(**kw):
    cfg = load_config("smoke", [f"model.{k}={v}" for k, v in kw.items()], env={}).model
    torch.manual_seed(0)
    return GPT(cfg)


def test_baseline_has_the_published_parameter_count():
    model = GPT(load_config("baseline", env={}).model)
    assert sum(p.numel() for p in model.parameters()) == 17_059_912  # spec §4.1
    assert len(model.blocks) == 9 and model.plan.num_encoder == 4 and model.skip_weights.shape == (4, 512)
    attn = model.blocks[0].mixer
    assert attn.c_k.weight.shape == (256, 512) and torch.all(attn.q_gain == 1.5)
    assert abs(model.tok_emb.weight.std().item() - 0.005) < 2e-4


def test_blocks_start_as_the_identity():
    model = small()
    x = torch.randint(0, 1024, (2, 16))
    assert all(torch.all(m.weight == 0) for m in model.modules() if isinstance(m, CastedLinear) and m.zero_init)
    # With zero-init projections each block returns its input: x0 through the encoder, then
    # each decoder block adds one U-Net skip (also x0), so the result is x0 scaled, and normed.
    x0 = F.rms_norm(model.tok_emb(x), (128,))
    assert torch.allclose(model.hidden(x), F.rms_norm(x0, (128,)), atol=1e-5)


def test_reductions_agree_and_the_head_is_softcapped():
    model = small(logit_softcap=5.0)
    with torch.no_grad():
        model.tok_emb.weight.mul_(400)  # large logits, so the cap is active
    x, y = torch.randint(0, 1024, (2, 12)), torch.randint(0, 1024, (2, 12))
    per_token = model(x, y, reduction="none")
    assert per_token.shape == (24,) and per_token.dtype == torch.float32
    assert torch.allclose(model(x, y), per_token.mean())
    logits = model.logits(model.hidden(x))
    assert logits.abs().max() <= 5.0 and logits.abs().max() > 4.9


def test_predictions_are_causal():
    model = small()
    for p in model.parameters():  # make every block do something
        if p.ndim == 2:
            torch.nn.init.normal_(p, std=0.05)
    x = torch.randint(0, 1024, (1, 32))
    y = torch.randint(0, 1024, (1, 32))
    base = model(x, y, reduction="none")
    x2 = x.clone()
    x2[0, 20:] = (x2[0, 20:] + 1) % 1024  # change the future
    changed = model(x2, y, reduction="none")
    assert torch.equal(base[:20], changed[:20]) and not torch.equal(base[20:], changed[20:])


def test_untied_head_and_cpu_precision():
    model = small(tie_embeddings=False)
    assert model.lm_head is not None and torch.all(model.lm_head.weight == 0)
    prepare_for_device(model, torch.device("cpu"))
    assert all(p.dtype == torch.float32 for p in model.parameters())
