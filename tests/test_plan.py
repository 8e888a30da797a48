"""The layer plan: today's models walk their plans to the same bits as the forward they replaced
(a frozen copy of it below), plans for the record's wirings have the spec's shape, and the
same seed builds the reference script's block weights (each layer's attention, then its MLP)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attention_reference import DenseReference, dense_document_mask, use_backend
from pgolf.config import load_config
from pgolf.model import GPT
from pgolf.model.attention import CausalSelfAttention
from pgolf.model.plan import Slot, build_plan, looped_order, plan_from_order
from pgolf.model.segments import DocSegments

# ---------------------------------------------------------------------------------------
# The forward pass before the layer plan (pgolf 04590db: GPT.hidden, Block.forward,
# CausalSelfAttention.forward and the full-head RoPE), frozen, on the new model's modules.


def _rms(x):
    return F.rms_norm(x, (x.size(-1),))


def _old_attention(attn, x, mask):
    b, t, d = x.shape
    q = attn.c_q(x).view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)
    k = attn.c_k(x).view(b, t, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
    v = attn.c_v(x).view(b, t, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
    q, k = _rms(q), _rms(k)
    hd = attn.head_dim
    inv_freq = 1.0 / (attn.rotary.base ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    freqs = torch.outer(torch.arange(t, dtype=torch.float32), inv_freq)
    cos, sin = freqs.cos()[None, None].to(q.dtype), freqs.sin()[None, None].to(q.dtype)

    def rotate(y):
        y1, y2 = y[..., : hd // 2], y[..., hd // 2:]
        return torch.cat((y1 * cos + y2 * sin, y2 * cos - y1 * sin), dim=-1)

    q, k = rotate(q), rotate(k)
    q = q * attn.q_gain.to(q.dtype)[None, :, None, None]
    gqa = attn.num_kv_heads != attn.num_heads
    if mask is None:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    else:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
    return attn.proj(y.transpose(1, 2).reshape(b, t, d))


def _old_block(block, x, x0, segments, mask):
    mix = block.resid_mix.to(x.dtype)
    x = mix[0] * x + mix[1] * x0
    mixer = block.mixer
    out = _old_attention(mixer, _rms(x), mask) if isinstance(mixer, CausalSelfAttention) else mixer(_rms(x), segments)
    x = x + block.attn_scale.to(x.dtype) * out
    return x + block.mlp_scale.to(x.dtype) * block.mlp(_rms(x))


def old_hidden(model, input_ids):
    cfg = model.cfg
    segments = DocSegments.from_tokens(input_ids, cfg.bos_id) if cfg.doc_isolation else None
    mask = dense_document_mask(segments.doc_id) if segments is not None else None
    x = model.tok_emb(input_ids)
    if model.bigram is not None:
        x = x + model.bigram(input_ids, segments).to(x.dtype)
    x = _rms(x)
    if model.smear is not None:
        x = model.smear(x, segments)
    x0 = x
    encoder = cfg.num_layers // 2 if cfg.stack.unet_skips else cfg.num_layers
    decoder = cfg.num_layers - encoder
    skips = []
    for block in model.blocks[:encoder]:
        x = _old_block(block, x, x0, segments, mask)
        if decoder:
            skips.append(x)
    for i, block in enumerate(model.blocks[encoder:]):
        if skips:
            x = x + model.skip_weights[i].to(x.dtype) * skips.pop()
        x = _old_block(block, x, x0, segments, mask)
    return _rms(x)


GDN_TINY = ["model.arch=gdn", "model.num_layers=5", "model.model_dim=48", "model.num_heads=2",
            "model.gdn_head_dim=16", "model.gdn_chunk_size=16", "model.kv_share_stride=2", "model.bigram_buckets=64",
            "model.bigram_dim=16", "model.smear_gate=true", "model.mlp_mult=2"]
MODELS = {
    "smoke": ("smoke", []),
    "smoke, no U-Net": ("smoke", ["model.stack.unet_skips=false"]),
    "smoke, 5 layers": ("smoke", ["model.num_layers=5"]),
    "baseline": ("baseline", []),
    "gdn": ("gdn", ["model.num_layers=4"]),
    "gdn hybrid, isolated": ("smoke", [*GDN_TINY, "model.stack.attn_layers=1,3", "model.doc_isolation=true"]),
    "gdn hybrid, U-Net": ("smoke", [*GDN_TINY, "model.stack.attn_layers=0-2", "model.stack.unet_skips=true"]),
}


def busy_model(preset, overrides, seed=0):
    """A model whose every weight matters (the zero-init projections too)."""
    torch.manual_seed(seed)
    model = GPT(load_config(preset, overrides, env={}).model).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "skip_weights" not in name and "resid_mix" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
            else:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


@pytest.mark.parametrize("name", list(MODELS))
def test_the_plan_walk_is_bit_identical_to_the_old_forward(name):
    preset, overrides = MODELS[name]
    model = busy_model(preset, overrides)
    if model.cfg.doc_isolation:  # the old forward's dense mask; flex is compared in test_attention.py
        use_backend(model, DenseReference())
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(2, model.cfg.vocab_size, (2, 67), generator=gen)
    ids[0, [0, 20, 21, 50]] = 1  # documents of odd lengths (and an empty one)
    ids[1, 33] = 1
    with torch.no_grad():
        assert torch.equal(model.hidden(ids), old_hidden(model, ids))


def test_todays_plans():
    baseline = build_plan(load_config("baseline", env={}).model)
    assert [s.layer for s in baseline.slots] == list(range(9)) and baseline.num_skip_weights == 4
    assert [s.skip_push for s in baseline.slots] == [True] * 4 + [False] * 5
    assert [s.skip_pop for s in baseline.slots] == [None] * 4 + [0, 1, 2, 3, None]
    assert {(s.lanes, s.norm_scale) for s in baseline.slots} == {(1, 1.0)}
    flat = build_plan(load_config("gdn", env={}).model)
    assert flat.num_skip_weights == 0 and not any(s.skip_push or s.skip_pop is not None for s in flat.slots)
    assert build_plan(load_config("smoke", ["model.num_layers=1"], env={}).model).num_skip_weights == 0


def test_the_record_recurrence_plan():
    """Spec §5.5: layers 3-5 three times (17 virtual layers), encoder [0,1,2,3,4,5,3,4],
    decoder [5,3,4,5,6,7,8,9,10]; 8 skip weights, the last decoder slot gets none; LN scale
    by physical layer; before the switch the plain 11-layer plan uses skip weights 0..4."""
    order = looped_order(11, range(3, 6), 2)
    assert order == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]
    looped = plan_from_order(order, 11, unet_skips=True, norm_scale=lambda l: (l + 1) ** -0.5)
    assert [s.layer for s in looped.slots[:8]] == [0, 1, 2, 3, 4, 5, 3, 4] and looped.num_encoder == 8
    assert [s.layer for s in looped.slots[8:]] == [5, 3, 4, 5, 6, 7, 8, 9, 10]
    assert looped.num_skip_weights == 8 and [s.skip_pop for s in looped.slots[8:]] == [*range(8), None]
    assert looped.slots[9].norm_scale == looped.slots[3].norm_scale == 0.5  # layer 3, both visits
    plain = plan_from_order(range(11), 11, unet_skips=True, num_skip_weights=looped.num_skip_weights)
    assert plain.num_encoder == 5 and [s.skip_pop for s in plain.slots[5:]] == [0, 1, 2, 3, 4, None]
    lanes = plan_from_order(order, 11, unet_skips=True, lanes_from=14)  # two lanes from layer 8
    assert [s.lanes for s in lanes.slots] == [1] * 14 + [2] * 3 and lanes.slots[14].layer == 8


def test_plans_are_checked():
    with pytest.raises(AssertionError, match="pops nothing"):
        from pgolf.model.plan import LayerPlan

        LayerPlan((Slot(0, 0, skip_pop=0),), 1, 1).check()
    with pytest.raises(AssertionError, match="lanes shrink"):
        LayerPlan((Slot(0, 0, lanes=2), Slot(0, 1)), 1, 0).check()


def test_same_seed_gives_the_reference_block_weights():
    """The reference train_gpt.py builds tok_emb, then per layer its attention (c_q, c_k, c_v,
    proj) and then its MLP (fc, proj), then draws tok_emb's N(0, std). Here that order is
    rebuilt with plain nn.Linear / nn.Embedding under the same seed."""
    cfg = load_config("baseline", env={}).model
    torch.manual_seed(1337)
    model = GPT(cfg)
    torch.manual_seed(1337)
    d, kv, hidden = cfg.model_dim, cfg.num_kv_heads * (cfg.model_dim // cfg.num_heads), cfg.mlp_mult * cfg.model_dim
    emb = nn.Embedding(cfg.vocab_size, d)
    layers = [[nn.Linear(i, o, bias=False) for i, o in ((d, d), (d, kv), (d, kv), (d, d), (d, hidden), (hidden, d))]
              for _ in range(cfg.num_layers)]
    nn.init.normal_(emb.weight, std=cfg.tied_embed_init_std)
    assert torch.equal(model.tok_emb.weight, emb.weight)
    for block, (q, k, v, _, fc, _) in zip(model.blocks, layers):
        for mine, ref in ((block.mixer.c_q, q), (block.mixer.c_k, k), (block.mixer.c_v, v), (block.mlp.fc, fc)):
            assert torch.equal(mine.weight, ref.weight)
        assert not block.mixer.proj.weight.any() and not block.mlp.proj.weight.any()


class _TwoLanes(nn.Module):
    """A stand-in two-lane block: moves the lanes apart symmetrically, so their mean is kept."""

    def forward(self, lanes, x0, segments=None, norm_scale=1.0):
        assert len(lanes) == 2
        return lanes[0] + 1.0, lanes[1] - 1.0


def test_the_walk_forks_and_merges_lanes():
    """Slots with lanes=2: the walk copies the stream into a second lane there and the final
    hidden state is the lanes' mean (the record's parallel residuals, spec §5.5)."""
    model = busy_model("smoke", ["model.stack.unet_skips=false"])
    ids = torch.randint(2, 1024, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x0 = model.embed(ids, None)
        x = x0
        for block in model.blocks[:2]:
            (x,) = block((x,), x0)
        expected = _rms(x)
        model.plan = plan_from_order(range(4), 4, unet_skips=False, lanes_from=2)
        model.blocks[2], model.blocks[3] = _TwoLanes(), _TwoLanes()
        torch.testing.assert_close(model.hidden(ids), expected, rtol=0, atol=1e-6)
