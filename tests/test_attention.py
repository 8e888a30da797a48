"""Attention backends against the dense-mask reference on packed documents, GQA and partial RoPE."""
import pytest
import torch

from attention_reference import DenseReference, dense_document_mask, use_backend
from pgolf.config import load_config
from pgolf.errors import PgolfError
from pgolf.model import GPT
from pgolf.model.attention import CausalSelfAttention
from pgolf.model.attention_backends import (FlashVarlen, FlexDocument, SDPACausal, choose_backend,
                                            flash_attn_available)
from pgolf.model.layers import Rotary, apply_rotary
from pgolf.model.segments import DocSegments

# CPU FlexAttention is torch's unfused forward, by design here (the fused kernel is the CUDA one).
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


def packed_rows(b=3, t=77, vocab=100, seed=0):
    """Rows of several documents of odd lengths: BOS (1) at random places, one row with none."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (b, t), generator=gen)
    ids[0, [0, 13, 14, t // 2]] = 1  # a one-token document at 13
    ids[1, [5, t - 11]] = 1  # the row starts mid-document
    return ids


def qkv(b, t, h, hkv, hd, seed=1, dtype=torch.float32, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    make = lambda heads: torch.randn(b, heads, t, hd, generator=gen).to(device, dtype)
    return make(h), make(hkv), make(hkv)


@pytest.mark.parametrize("h, hkv", [(4, 4), (4, 2), (6, 1)])
def test_flex_equals_the_dense_reference_on_packed_documents(h, hkv):
    ids = packed_rows()
    seg = DocSegments.from_tokens(ids, 1)
    q, k, v = qkv(*ids.shape, h, hkv, 16)
    flex, dense = FlexDocument(), DenseReference()
    with torch.no_grad():
        got = flex(q, k, v, flex.prepare(seg))
    torch.testing.assert_close(got, dense(q, k, v, dense.prepare(seg)), rtol=1e-5, atol=1e-5)


def test_one_document_per_row_is_plain_causal_attention():
    ids = packed_rows()
    ids[ids == 1] = 2
    seg = DocSegments.from_tokens(ids, 1)
    q, k, v = qkv(*ids.shape, 4, 2, 8)
    flex = FlexDocument()
    with torch.no_grad():
        torch.testing.assert_close(flex(q, k, v, flex.prepare(seg)), SDPACausal()(q, k, v, None), rtol=1e-5,
                                   atol=1e-5)


def test_the_dense_reference_isolates_documents():
    """The reference itself: a document's outputs are those of the document alone."""
    ids = packed_rows()
    seg = DocSegments.from_tokens(ids, 1)
    q, k, v = qkv(*ids.shape, 4, 2, 8)
    full = DenseReference()(q, k, v, dense_document_mask(seg.doc_id))
    alone = SDPACausal()(q[:1, :, 14:38], k[:1, :, 14:38], v[:1, :, 14:38], None)
    torch.testing.assert_close(full[:1, :, 14:38], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rope_dims", [0, 16, 4])
def test_attention_module_flex_vs_dense_with_gqa_and_partial_rope(rope_dims):
    torch.manual_seed(0)
    flex = CausalSelfAttention(96, 6, 2, 10000.0, 1.5, rope_dims, backend=FlexDocument())
    torch.nn.init.normal_(flex.proj.weight, std=0.05)
    dense = CausalSelfAttention(96, 6, 2, 10000.0, 1.5, rope_dims, backend=DenseReference())
    dense.load_state_dict(flex.state_dict())
    ids = packed_rows(2, 45)
    seg = DocSegments.from_tokens(ids, 1)
    x = torch.randn(2, 45, 96)
    with torch.no_grad():
        got = flex(x, seg.with_attention(flex.backend.prepare(seg)))
        ref = dense(x, seg.with_attention(dense.backend.prepare(seg)))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_a_hybrid_model_with_flex_matches_the_dense_reference():
    cfg = load_config("smoke", ["model.arch=gdn", "model.num_layers=3", "model.model_dim=48", "model.num_heads=2",
                                "model.gdn_head_dim=16", "model.gdn_chunk_size=16", "model.stack.attn_layers=0,2",
                                "model.doc_isolation=true", "model.attention.rope_dims=8"], env={}).model
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    for p in model.parameters():
        if p.ndim == 2:
            torch.nn.init.normal_(p, std=0.05)
    assert isinstance(model.attention_backend, FlexDocument)  # auto, without flash_attn/CUDA
    ids = packed_rows(2, 50, vocab=1024)
    with torch.no_grad():
        got = model.hidden(ids)
        use_backend(model, DenseReference())
        ref = model.hidden(ids)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_flex_has_no_cpu_backward_and_says_so():
    ids = packed_rows()
    seg = DocSegments.from_tokens(ids, 1)
    q, k, v = qkv(*ids.shape, 4, 2, 8)
    q.requires_grad_()
    flex = FlexDocument()
    with pytest.raises(PgolfError, match="no FlexAttention backward on CPU"):
        flex(q, k, v, flex.prepare(seg))


def test_backend_choice():
    assert isinstance(choose_backend("auto", doc_isolation=False), SDPACausal)
    expected = FlashVarlen if flash_attn_available() and torch.cuda.is_available() else FlexDocument
    assert isinstance(choose_backend("auto", doc_isolation=True), expected)
    assert isinstance(choose_backend("flex", doc_isolation=True), FlexDocument)
    if not flash_attn_available():
        with pytest.raises(PgolfError, match="flash_attn package is not installed"):
            choose_backend("flash", doc_isolation=True)


@pytest.mark.skipif(not (flash_attn_available() and torch.cuda.is_available()),
                    reason="flash_attn is not installed or there is no CUDA device")
@pytest.mark.parametrize("h, hkv", [(8, 8), (8, 4)])
def test_flash_varlen_equals_the_dense_reference(h, hkv):
    ids = packed_rows(3, 200).cuda()
    seg = DocSegments.from_tokens(ids, 1)
    q, k, v = qkv(*ids.shape, h, hkv, 64, dtype=torch.bfloat16, device="cuda")
    flash, dense = FlashVarlen(), DenseReference()
    torch.testing.assert_close(flash(q, k, v, flash.prepare(seg)), dense(q, k, v, dense.prepare(seg)),
                               rtol=2e-2, atol=2e-2)


def test_partial_rope_rotates_only_its_dims():
    """rope_dims=16 of 64: 8 frequencies base^(-2i/16) on (x[0:8], x[8:16]); dims 16.. pass through;
    rope_dims=0 is the full-head rotation."""
    t, hd = 40, 64
    x = torch.randn(1, 2, t, hd)
    cos, sin = Rotary(hd, 10000.0, 16)(t, x.device, x.dtype)
    assert cos.shape[-1] == 8
    y = apply_rotary(x, cos, sin)
    assert torch.equal(y[..., 16:], x[..., 16:])
    pos = torch.arange(t, dtype=torch.float32)[:, None]
    ang = pos * 10000.0 ** (-torch.arange(0, 16, 2, dtype=torch.float32) / 16)
    x1, x2 = x[..., :8], x[..., 8:16]
    torch.testing.assert_close(y[..., :8], x1 * ang.cos() + x2 * ang.sin())
    torch.testing.assert_close(y[..., 8:16], x2 * ang.cos() - x1 * ang.sin())
    full_cos, full_sin = Rotary(hd, 10000.0)(t, x.device, x.dtype)
    assert full_cos.shape[-1] == 32 and torch.equal(Rotary(hd, 10000.0, hd)(t, x.device, x.dtype)[0], full_cos)


def test_partial_rope_scores_depend_only_on_the_offset():
    t, hd = 30, 32
    rot = Rotary(hd, 10000.0, 8)
    cos, sin = rot(t, torch.device("cpu"), torch.float64)
    q, k = torch.randn(hd, dtype=torch.float64), torch.randn(hd, dtype=torch.float64)
    qs = apply_rotary(q.expand(1, 1, t, hd), cos, sin)[0, 0]
    ks = apply_rotary(k.expand(1, 1, t, hd), cos, sin)[0, 0]
    torch.testing.assert_close(qs[10] @ ks[4], qs[25] @ ks[19])
