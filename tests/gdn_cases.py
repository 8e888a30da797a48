"""Shared gated-delta-rule problems for the torch-path tests and the interpreter tier."""
import torch
import torch.nn.functional as F

from pgolf.ops.gdn import gdn_chunk_scan
from pgolf.ops.reference import gdn_recurrent_reference


def problem(b=2, t=37, h=2, k=12, v=20, dtype=torch.float32, seed=0, gate=0.5, n_seq=None):
    """q, k (unit rows, as the layer feeds them), v, g <= 0, beta in (0, 1), and a random initial state."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, t, h, k, generator=gen)
    key = F.normalize(torch.randn(b, t, h, k, generator=gen), dim=-1)
    val = torch.randn(b, t, h, v, generator=gen)
    g = -torch.rand(b, t, h, generator=gen) * gate
    beta = torch.rand(b, t, h, generator=gen)
    s0 = torch.randn(n_seq or b, h, k, v, generator=gen)
    return [x.to(dtype) for x in (q, key, val, g, beta)], s0


def leaves(xs, dtype=None):
    return [x.detach().to(dtype or x.dtype).requires_grad_() for x in xs]


def run(fn, xs, s0, cotangents, **kw):
    """Outputs and gradients (inputs, then initial state) of <o, do> + <final, dfinal>."""
    xs = leaves(xs)
    s0 = s0.detach().clone().requires_grad_() if s0 is not None else None
    o, final = fn(*xs, initial_state=s0, **kw)
    do, dfinal = cotangents
    ((o.to(do.dtype) * do).sum() + (final.to(dfinal.dtype) * dfinal).sum()).backward()
    grads = [x.grad for x in xs] + ([s0.grad] if s0 is not None else [])
    return o, final, grads


def truth(xs, s0, cotangents, **kw):
    """The fp64 token-by-token recurrence and its autograd gradients."""
    to64 = [x.double() for x in xs]
    s64 = s0.double() if s0 is not None else None
    cot = [c.double() for c in cotangents]
    return run(gdn_recurrent_reference, to64, s64, cot, **kw)


def cotangents_for(xs, n_seq, seed=1):
    gen = torch.Generator().manual_seed(seed)
    q, _, v, _, _ = xs
    return torch.randn(v.shape, generator=gen), torch.randn(n_seq, q.shape[2], q.shape[3], v.shape[3], generator=gen)


def rms_ratio(ref, got):
    """FLA's error measure: RMS(got − ref) / RMS(ref)."""
    ref, got = ref.double(), got.double()
    return ((got - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def assert_matches_truth(xs, s0, *, fwd=1e-5, bwd=1e-5, **kw):
    n_seq = s0.shape[0] if s0 is not None else (kw["cu_seqlens"].numel() - 1 if "cu_seqlens" in kw else xs[0].shape[0])
    cot = cotangents_for(xs, n_seq)
    o, final, grads = run(gdn_chunk_scan, xs, s0, [c.to(torch.float32) for c in cot], **kw)
    o_ref, final_ref, grads_ref = truth(xs, s0, cot, **{k: v for k, v in kw.items() if k == "cu_seqlens"})
    assert torch.isfinite(o).all() and all(torch.isfinite(gr).all() for gr in grads)
    assert rms_ratio(o_ref, o) < fwd and rms_ratio(final_ref, final) < fwd
    names = ["dq", "dk", "dv", "dg", "dbeta", "ds0"]
    for name, ref, got in zip(names, grads_ref, grads):
        assert rms_ratio(ref, got) < bwd, (name, rms_ratio(ref, got))
