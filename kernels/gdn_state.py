"""The sequential part of the chunked gated delta rule: handing the state from chunk to chunk.

One program per (sequence, head) keeps the head's state S [K, V] in fp32 registers and
walks the sequence's chunks in order (forward) or in reverse (backward):

  forward   states[c] = S;  v_new[c] = u[c] − w[c]·S;  S = Γ_C[c]·S + kd[c]ᵀ·v_new[c]
  backward  dv = dv_new[c] + kd[c]·dS;  du[c] = dv;  dw[c] = −dv·states[c]ᵀ;
            dkd[c] = v_new[c]·dSᵀ;  dΓ_C[c] = <states[c], dS>;
            dS = dstates[c] + Γ_C[c]·dS − w[c]ᵀ·dv

Everything else of the scan (the per-chunk WY solve and the output products) is batched
over chunks in pgolf.ops.gdn. Tensors are chunk-major: w, kd [N, C, H, K]; u, v_new
[N, C, H, V]; gamma [N, H]; states [N, H, K, V]; s0 / final [S, H, K, V]; starts [S + 1].
K and V are padded to powers of two (>= 16, for tl.dot) with masks. Dots run at the chunk
kernels' precision and warps (gdn_chunk.launch_options).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .gdn_chunk import launch_options


@triton.jit
def _chunk_offsets(c, h, C: tl.constexpr, H, D, o_c, o_d):
    """Offsets of chunk c's [C, D] block of head h in a [N, C, H, D] tensor."""
    rows = (c * C + o_c).to(tl.int64) * H + h
    return rows[:, None] * D + o_d[None, :]


@triton.jit
def _sequence_head(starts_ptr, i_s, i_h, H, K, V, o_k, o_v):
    """For sequence i_s, head i_h: the state block's offsets and mask, the column masks of
    chunk blocks, the flat base of its [S, H, K, V] state, and its chunk range [c0, c1)."""
    m_k, m_v = o_k < K, o_v < V
    base = (i_s * H + i_h).to(tl.int64) * K * V
    c0, c1 = tl.load(starts_ptr + i_s), tl.load(starts_ptr + i_s + 1)
    return (o_k[:, None] * V + o_v[None, :], m_k[:, None] & m_v[None, :], m_k[None, :], m_v[None, :],
            base, c0, c1)


@triton.jit
def _state_fwd_kernel(w_ptr, u_ptr, kd_ptr, g_ptr, s0_ptr, st_ptr, vn_ptr, fin_ptr, starts_ptr,
                      H, K, V, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr):
    i_s, i_h = tl.program_id(0), tl.program_id(1)
    o_k, o_v, o_c = tl.arange(0, BK), tl.arange(0, BV), tl.arange(0, C)
    o_kv, m_kv, m_ck, m_cv, base, c0, c1 = _sequence_head(starts_ptr, i_s, i_h, H, K, V, o_k, o_v)
    b_s = tl.load(s0_ptr + base + o_kv, mask=m_kv, other=0.0)
    for c in range(c0, c1):
        tl.store(st_ptr + (c * H + i_h).to(tl.int64) * K * V + o_kv, b_s, mask=m_kv)
        o_ck = _chunk_offsets(c, i_h, C, H, K, o_c, o_k)
        o_cv = _chunk_offsets(c, i_h, C, H, V, o_c, o_v)
        b_w = tl.load(w_ptr + o_ck, mask=m_ck, other=0.0)
        b_vn = tl.load(u_ptr + o_cv, mask=m_cv, other=0.0) - tl.dot(b_w, b_s, input_precision=PREC)
        tl.store(vn_ptr + o_cv, b_vn, mask=m_cv)
        b_kd = tl.load(kd_ptr + o_ck, mask=m_ck, other=0.0)
        b_g = tl.load(g_ptr + c * H + i_h)
        b_s = b_g * b_s + tl.dot(tl.trans(b_kd), b_vn, input_precision=PREC)
    tl.store(fin_ptr + base + o_kv, b_s, mask=m_kv)


@triton.jit
def _state_bwd_kernel(w_ptr, kd_ptr, g_ptr, st_ptr, vn_ptr, starts_ptr, dvn_ptr, dst_ptr, dfin_ptr,
                      dw_ptr, du_ptr, dkd_ptr, dg_ptr, ds0_ptr,
                      H, K, V, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr):
    i_s, i_h = tl.program_id(0), tl.program_id(1)
    o_k, o_v, o_c = tl.arange(0, BK), tl.arange(0, BV), tl.arange(0, C)
    o_kv, m_kv, m_ck, m_cv, base, c0, c1 = _sequence_head(starts_ptr, i_s, i_h, H, K, V, o_k, o_v)
    b_ds = tl.load(dfin_ptr + base + o_kv, mask=m_kv, other=0.0)
    for i in range(0, c1 - c0):
        c = c1 - 1 - i
        o_ck = _chunk_offsets(c, i_h, C, H, K, o_c, o_k)
        o_cv = _chunk_offsets(c, i_h, C, H, V, o_c, o_v)
        off_st = (c * H + i_h).to(tl.int64) * K * V + o_kv
        b_st = tl.load(st_ptr + off_st, mask=m_kv, other=0.0)
        b_kd = tl.load(kd_ptr + o_ck, mask=m_ck, other=0.0)
        b_dv = tl.load(dvn_ptr + o_cv, mask=m_cv, other=0.0) + tl.dot(b_kd, b_ds, input_precision=PREC)
        tl.store(du_ptr + o_cv, b_dv, mask=m_cv)
        tl.store(dw_ptr + o_ck, -tl.dot(b_dv, tl.trans(b_st), input_precision=PREC), mask=m_ck)
        b_vn = tl.load(vn_ptr + o_cv, mask=m_cv, other=0.0)
        tl.store(dkd_ptr + o_ck, tl.dot(b_vn, tl.trans(b_ds), input_precision=PREC), mask=m_ck)
        tl.store(dg_ptr + c * H + i_h, tl.sum(tl.sum(b_st * b_ds, axis=1), axis=0))
        b_w = tl.load(w_ptr + o_ck, mask=m_ck, other=0.0)
        b_g = tl.load(g_ptr + c * H + i_h)
        b_ds = tl.load(dst_ptr + off_st, mask=m_kv, other=0.0) + b_g * b_ds - tl.dot(tl.trans(b_w), b_dv, input_precision=PREC)
    tl.store(ds0_ptr + base + o_kv, b_ds, mask=m_kv)


def _blocks(k: int, v: int) -> tuple[int, int]:
    return max(16, triton.next_power_of_2(k)), max(16, triton.next_power_of_2(v))


def state_pass_forward(w, u, kd, gamma, s0, starts):
    n, c, h, k = w.shape
    v = u.shape[3]
    assert c >= 16 or os.environ.get("TRITON_INTERPRET") == "1", "tl.dot needs chunks of at least 16"
    w, u, kd, gamma, s0 = (t.contiguous() for t in (w, u, kd, gamma, s0))
    v_new = torch.empty_like(u)
    states = torch.empty(n, h, k, v, device=w.device, dtype=w.dtype)
    final = torch.empty_like(s0)
    bk, bv = _blocks(k, v)
    _state_fwd_kernel[(s0.shape[0], h)](w, u, kd, gamma, s0, states, v_new, final, starts.contiguous(),
                                        h, k, v, C=c, BK=bk, BV=bv, **launch_options())
    return v_new, states, final


def state_pass_backward(w, kd, gamma, states, v_new, starts, d_vnew, d_states, d_final):
    n, c, h, k = w.shape
    v = v_new.shape[3]
    args = [t.contiguous() for t in (w, kd, gamma, states, v_new)]
    dw, du, dkd = torch.empty_like(args[0]), torch.empty_like(args[4]), torch.empty_like(args[1])
    dgamma = torch.empty_like(args[2])
    ds0 = torch.empty_like(d_final)
    bk, bv = _blocks(k, v)
    _state_bwd_kernel[(d_final.shape[0], h)](*args, starts.contiguous(), d_vnew.contiguous(), d_states.contiguous(),
                                             d_final.contiguous(), dw, du, dkd, dgamma, ds0,
                                             h, k, v, C=c, BK=bk, BV=bv, **launch_options())
    return dw, du, dkd, dgamma, ds0
