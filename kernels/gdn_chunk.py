"""The per-chunk parts of the chunked gated delta rule (see pgolf/ops/gdn.py for the algebra).

One program per (chunk, head), chunk C = 64 tokens by default, everything in fp32 registers:

  wy_forward       γ = cumsum(g); A = β·KKᵀ ⊙ D (strictly lower); T = (I + A)⁻¹;
                   w = T·(βΓ ⊙ K), u = T·(β ⊙ V), kd = K ⊙ Γ_C/Γ, Γ_C
  output_forward   O = (Q ⊙ Γ)·S_0 + (QKᵀ ⊙ D)·U
  output_backward  dQ, dS_0 (fed to the state pass backward), dU from the intra-chunk term,
                   and the output's share of dK and dγ
  wy_backward      the rest of dK, dV, dβ, dγ through kd, Γ_C, w, u, T and A; dg = reverse cumsum

with D_ij = Γ_i/Γ_j = exp(γ_i − γ_j) for i >= j (0 above). The state hand-off between chunks
is pgolf_kernels.gdn_state. Backward recomputes γ, A and T instead of storing them.

T is built by blocked forward substitution written as doubling: with T_b the inverse of the
b×b diagonal blocks, T_2b = T_b − T_b·A_b·T_b, A_b being A's lower-left b×b blocks inside
each 2b×2b block. log2(C) levels of two C×C dots each; the same arithmetic as solving
block by block, so no cancellation of the kind a Neumann-series product would have.

Token-major tensors are the caller's contiguous [tokens, H, D] (D = K or V) and [tokens, H];
a chunk is (first token, valid length) from chunk_tok / chunk_len, rows past the length load
as zeros and are never stored. Chunk-major tensors ([N, C, H, D], [N, C, H], [N, H, K, V],
padding rows zero) are what the state pass reads and writes. K and V pad to powers of two
(>= 16, for tl.dot) with masks. Dots take fp32 operands (bf16 I/O is widened on load);
PREC is their precision ("tf32x3" by default on GPU, about fp32 accuracy on tensor cores).
Launch options (launch_options) are shared with the state pass in gdn_state.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


@triton.jit
def _load_rows(ptr, tok0, n_valid, i_h, H, D, o_c, o_d):
    """[C, BD] fp32 block of head i_h from a token-major [tokens, H, D] tensor."""
    rows = (tok0 + o_c).to(tl.int64) * H + i_h
    mask = (o_c < n_valid)[:, None] & (o_d < D)[None, :]
    return tl.load(ptr + rows[:, None] * D + o_d[None, :], mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _store_rows(ptr, x, tok0, n_valid, i_h, H, D, o_c, o_d):
    rows = (tok0 + o_c).to(tl.int64) * H + i_h
    mask = (o_c < n_valid)[:, None] & (o_d < D)[None, :]
    tl.store(ptr + rows[:, None] * D + o_d[None, :], x.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _load_gate(ptr, tok0, n_valid, i_h, H, o_c):
    """[C] fp32 gate of head i_h from a token-major [tokens, H] tensor; 0 past the length."""
    return tl.load(ptr + (tok0 + o_c).to(tl.int64) * H + i_h, mask=o_c < n_valid, other=0.0).to(tl.float32)


@triton.jit
def _store_gate(ptr, x, tok0, n_valid, i_h, H, o_c):
    tl.store(ptr + (tok0 + o_c).to(tl.int64) * H + i_h, x.to(ptr.dtype.element_ty), mask=o_c < n_valid)


@triton.jit
def _chunk_offsets(i_n, i_h, C: tl.constexpr, H, D, o_c, o_d):
    """Offsets of chunk i_n's [C, BD] block of head i_h in a chunk-major [N, C, H, D] tensor."""
    rows = (i_n * C + o_c).to(tl.int64) * H + i_h
    return rows[:, None] * D + o_d[None, :]


@triton.jit
def _decay(gam, o_c):
    """D_ij = exp(γ_i − γ_j) on and below the diagonal, 0 above (no exp of positive numbers)."""
    causal = o_c[:, None] >= o_c[None, :]
    return tl.exp(tl.where(causal, gam[:, None] - gam[None, :], float("-inf")))


@triton.jit
def _unit_lower_inverse(a, o_c, LOG2C: tl.constexpr, PREC: tl.constexpr):
    """(I + a)⁻¹ for strictly lower a [C, C], by doubling the solved diagonal block size."""
    t = (o_c[:, None] == o_c[None, :]).to(tl.float32)
    for lvl in tl.static_range(LOG2C):  # solved blocks of 2**lvl rows -> 2**(lvl + 1)
        same_pair = (o_c[:, None] >> (lvl + 1)) == (o_c[None, :] >> (lvl + 1))
        other_half = (o_c[:, None] >> lvl) != (o_c[None, :] >> lvl)
        a_b = tl.where(same_pair & other_half, a, 0.0)
        t = t - tl.dot(tl.dot(t, a_b, input_precision=PREC), t, input_precision=PREC)
    return t


@triton.jit
def _wy_chunk(k_ptr, v_ptr, g_ptr, beta_ptr, tok0, n_valid, i_h, H, K, V, o_c, o_k, o_v,
              LOG2C: tl.constexpr, PREC: tl.constexpr):
    """One chunk's K, V, β, Γ (cumulative gates), D, KKᵀ and T: what the WY forward and its
    backward both start from."""
    b_k = _load_rows(k_ptr, tok0, n_valid, i_h, H, K, o_c, o_k)
    b_v = _load_rows(v_ptr, tok0, n_valid, i_h, H, V, o_c, o_v)
    b_beta = _load_gate(beta_ptr, tok0, n_valid, i_h, H, o_c)
    gam = tl.cumsum(_load_gate(g_ptr, tok0, n_valid, i_h, H, o_c), 0)
    decay = _decay(gam, o_c)
    kk = tl.dot(b_k, tl.trans(b_k), input_precision=PREC)
    a = tl.where(o_c[:, None] > o_c[None, :], b_beta[:, None] * kk * decay, 0.0)
    return b_k, b_v, b_beta, gam, decay, kk, _unit_lower_inverse(a, o_c, LOG2C, PREC)


@triton.jit
def _wy_fwd_kernel(k_ptr, v_ptr, g_ptr, beta_ptr, tok_ptr, len_ptr, w_ptr, u_ptr, kd_ptr, gamma_ptr,
                   H, K, V, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, LOG2C: tl.constexpr,
                   PREC: tl.constexpr):
    i_n, i_h = tl.program_id(0), tl.program_id(1)
    o_c, o_k, o_v = tl.arange(0, C), tl.arange(0, BK), tl.arange(0, BV)
    tok0, n_valid = tl.load(tok_ptr + i_n), tl.load(len_ptr + i_n)
    b_k, b_v, b_beta, gam, decay, kk, t = _wy_chunk(k_ptr, v_ptr, g_ptr, beta_ptr, tok0, n_valid, i_h, H, K, V,
                                                   o_c, o_k, o_v, LOG2C, PREC)
    gam_last = tl.sum(tl.where(o_c == C - 1, gam, 0.0), 0)
    b_w = tl.dot(t, (b_beta * tl.exp(gam))[:, None] * b_k, input_precision=PREC)
    b_u = tl.dot(t, b_beta[:, None] * b_v, input_precision=PREC)
    m_k, m_v = (o_k < K)[None, :], (o_v < V)[None, :]
    o_ck = _chunk_offsets(i_n, i_h, C, H, K, o_c, o_k)
    tl.store(w_ptr + o_ck, b_w, mask=m_k)
    tl.store(kd_ptr + o_ck, b_k * tl.exp(gam_last - gam)[:, None], mask=m_k)
    tl.store(u_ptr + _chunk_offsets(i_n, i_h, C, H, V, o_c, o_v), b_u, mask=m_v)
    tl.store(gamma_ptr + i_n * H + i_h, tl.exp(gam_last))


@triton.jit
def _load_state(ptr, i_n, i_h, H, K, V, o_k, o_v):
    off = (i_n * H + i_h).to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :]
    return tl.load(ptr + off, mask=(o_k < K)[:, None] & (o_v < V)[None, :], other=0.0)


@triton.jit
def _output_fwd_kernel(q_ptr, k_ptr, g_ptr, st_ptr, vn_ptr, tok_ptr, len_ptr, o_ptr, scale,
                       H, K, V, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr):
    i_n, i_h = tl.program_id(0), tl.program_id(1)
    o_c, o_k, o_v = tl.arange(0, C), tl.arange(0, BK), tl.arange(0, BV)
    tok0, n_valid = tl.load(tok_ptr + i_n), tl.load(len_ptr + i_n)
    b_q = _load_rows(q_ptr, tok0, n_valid, i_h, H, K, o_c, o_k) * scale
    b_k = _load_rows(k_ptr, tok0, n_valid, i_h, H, K, o_c, o_k)
    gam = tl.cumsum(_load_gate(g_ptr, tok0, n_valid, i_h, H, o_c), 0)
    b_s = _load_state(st_ptr, i_n, i_h, H, K, V, o_k, o_v)
    b_vn = tl.load(vn_ptr + _chunk_offsets(i_n, i_h, C, H, V, o_c, o_v), mask=(o_v < V)[None, :], other=0.0)
    scores = tl.dot(b_q, tl.trans(b_k), input_precision=PREC) * _decay(gam, o_c)
    b_o = tl.dot(b_q * tl.exp(gam)[:, None], b_s, input_precision=PREC) + tl.dot(scores, b_vn, input_precision=PREC)
    _store_rows(o_ptr, b_o, tok0, n_valid, i_h, H, V, o_c, o_v)


@triton.jit
def _output_bwd_kernel(q_ptr, k_ptr, g_ptr, st_ptr, vn_ptr, do_ptr, tok_ptr, len_ptr,
                       dq_ptr, dk_ptr, dgam_ptr, dvn_ptr, dst_ptr, scale,
                       H, K, V, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr):
    i_n, i_h = tl.program_id(0), tl.program_id(1)
    o_c, o_k, o_v = tl.arange(0, C), tl.arange(0, BK), tl.arange(0, BV)
    tok0, n_valid = tl.load(tok_ptr + i_n), tl.load(len_ptr + i_n)
    b_qs = _load_rows(q_ptr, tok0, n_valid, i_h, H, K, o_c, o_k) * scale
    b_k = _load_rows(k_ptr, tok0, n_valid, i_h, H, K, o_c, o_k)
    b_do = _load_rows(do_ptr, tok0, n_valid, i_h, H, V, o_c, o_v)
    gam = tl.cumsum(_load_gate(g_ptr, tok0, n_valid, i_h, H, o_c), 0)
    e_gam = tl.exp(gam)
    decay = _decay(gam, o_c)
    b_s = _load_state(st_ptr, i_n, i_h, H, K, V, o_k, o_v)
    o_cv = _chunk_offsets(i_n, i_h, C, H, V, o_c, o_v)
    b_vn = tl.load(vn_ptr + o_cv, mask=(o_v < V)[None, :], other=0.0)
    # inter-chunk term (Q ⊙ Γ)·S_0
    d_state = tl.dot(tl.trans(b_qs * e_gam[:, None]), b_do, input_precision=PREC)
    d_qg = tl.dot(b_do, tl.trans(b_s), input_precision=PREC)
    d_qs = d_qg * e_gam[:, None]
    d_gam = tl.sum(d_qg * b_qs, 1) * e_gam
    # intra-chunk term (QKᵀ ⊙ D)·U
    qk = tl.dot(b_qs, tl.trans(b_k), input_precision=PREC)
    d_vn = tl.dot(tl.trans(qk * decay), b_do, input_precision=PREC)
    d_scores = tl.dot(b_do, tl.trans(b_vn), input_precision=PREC)
    d_qk = d_scores * decay
    d_qs += tl.dot(d_qk, b_k, input_precision=PREC)
    b_dk = tl.dot(tl.trans(d_qk), b_qs, input_precision=PREC)
    dd = d_qk * qk  # dL/dD ⊙ D = dL/d(γ_i − γ_j)
    d_gam += tl.sum(dd, 1) - tl.sum(dd, 0)

    _store_rows(dq_ptr, d_qs * scale, tok0, n_valid, i_h, H, K, o_c, o_k)
    tl.store(dk_ptr + _chunk_offsets(i_n, i_h, C, H, K, o_c, o_k), b_dk, mask=(o_k < K)[None, :])
    tl.store(dgam_ptr + (i_n * C + o_c).to(tl.int64) * H + i_h, d_gam)
    tl.store(dvn_ptr + o_cv, d_vn, mask=(o_v < V)[None, :])
    off_st = (i_n * H + i_h).to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :]
    tl.store(dst_ptr + off_st, d_state, mask=(o_k < K)[:, None] & (o_v < V)[None, :])


@triton.jit
def _wy_bwd_kernel(k_ptr, v_ptr, g_ptr, beta_ptr, tok_ptr, len_ptr,
                   dw_ptr, du_ptr, dkd_ptr, dgamma_ptr, dk_part_ptr, dgam_part_ptr,
                   dk_ptr, dv_ptr, dg_ptr, dbeta_ptr,
                   H, K, V, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, LOG2C: tl.constexpr,
                   PREC: tl.constexpr):
    i_n, i_h = tl.program_id(0), tl.program_id(1)
    o_c, o_k, o_v = tl.arange(0, C), tl.arange(0, BK), tl.arange(0, BV)
    tok0, n_valid = tl.load(tok_ptr + i_n), tl.load(len_ptr + i_n)
    b_k, b_v, b_beta, gam, decay, kk, t = _wy_chunk(k_ptr, v_ptr, g_ptr, beta_ptr, tok0, n_valid, i_h, H, K, V,
                                                   o_c, o_k, o_v, LOG2C, PREC)
    e_gam = tl.exp(gam)
    gam_last = tl.sum(tl.where(o_c == C - 1, gam, 0.0), 0)

    m_k, m_v = (o_k < K)[None, :], (o_v < V)[None, :]
    o_ck = _chunk_offsets(i_n, i_h, C, H, K, o_c, o_k)
    b_dw = tl.load(dw_ptr + o_ck, mask=m_k, other=0.0)
    b_du = tl.load(du_ptr + _chunk_offsets(i_n, i_h, C, H, V, o_c, o_v), mask=m_v, other=0.0)
    b_dkd = tl.load(dkd_ptr + o_ck, mask=m_k, other=0.0)
    b_dk = tl.load(dk_part_ptr + o_ck, mask=m_k, other=0.0)
    d_gam = tl.load(dgam_part_ptr + (i_n * C + o_c).to(tl.int64) * H + i_h)
    d_gamma = tl.load(dgamma_ptr + i_n * H + i_h)

    # kd = K ⊙ exp(γ_C − γ) and Γ_C = exp(γ_C), γ_C being the last slot's γ
    e_dec = tl.exp(gam_last - gam)
    b_dk += b_dkd * e_dec[:, None]
    d_e = tl.sum(b_dkd * b_k, 1) * e_dec
    d_gam -= d_e
    d_gam += tl.where(o_c == C - 1, tl.sum(d_e, 0) + d_gamma * tl.exp(gam_last), 0.0)
    # w = T·(βΓ ⊙ K), u = T·(β ⊙ V)
    bg = b_beta * e_gam
    d_t = tl.dot(b_dw, tl.trans(bg[:, None] * b_k), input_precision=PREC) + \
        tl.dot(b_du, tl.trans(b_beta[:, None] * b_v), input_precision=PREC)
    t_t = tl.trans(t)
    d_bk = tl.dot(t_t, b_dw, input_precision=PREC)
    d_bv = tl.dot(t_t, b_du, input_precision=PREC)
    b_dk += d_bk * bg[:, None]
    d_bg = tl.sum(d_bk * b_k, 1)
    d_beta = d_bg * e_gam + tl.sum(d_bv * b_v, 1)
    d_gam += d_bg * bg
    b_dv = d_bv * b_beta[:, None]
    # T = (I + A)⁻¹ gives dA = −Tᵀ·dT·Tᵀ on A's strictly lower support; A = β ⊙ KKᵀ ⊙ D
    d_a = -tl.dot(tl.dot(t_t, d_t, input_precision=PREC), t_t, input_precision=PREC)
    d_a = tl.where(o_c[:, None] > o_c[None, :], d_a, 0.0)
    d_kk = d_a * b_beta[:, None] * decay
    d_beta += tl.sum(d_a * kk * decay, 1)
    b_dk += tl.dot(d_kk + tl.trans(d_kk), b_k, input_precision=PREC)
    dd = d_kk * kk
    d_gam += tl.sum(dd, 1) - tl.sum(dd, 0)
    # γ = cumsum(g): dg_i = Σ_{j >= i} dγ_j
    d_g = tl.sum(d_gam, 0) - tl.cumsum(d_gam, 0) + d_gam

    _store_rows(dk_ptr, b_dk, tok0, n_valid, i_h, H, K, o_c, o_k)
    _store_rows(dv_ptr, b_dv, tok0, n_valid, i_h, H, V, o_c, o_v)
    _store_gate(dg_ptr, d_g, tok0, n_valid, i_h, H, o_c)
    _store_gate(dbeta_ptr, d_beta, tok0, n_valid, i_h, H, o_c)


def launch_options() -> dict:
    """Dot precision and warps of every GDN kernel. Defaults on GPU: tf32x3 dots (about fp32
    accuracy; "tf32" trades it for speed) and 8 warps, which compiled for sm_90a at C = 64,
    K = V = 64 needs less register stack than 4 in every kernel (benchmarks/aot_resources.py).
    PGOLF_GDN_DOT_PRECISION and PGOLF_GDN_WARPS override them for tuning."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return dict(PREC="ieee", num_warps=1)
    prec = os.environ.get("PGOLF_GDN_DOT_PRECISION", "tf32x3")
    warps = os.environ.get("PGOLF_GDN_WARPS", "8")
    if prec not in ("ieee", "tf32", "tf32x3") or warps not in ("1", "2", "4", "8", "16"):
        raise ValueError(f"PGOLF_GDN_DOT_PRECISION={prec!r} / PGOLF_GDN_WARPS={warps!r}: "
                         "expected ieee|tf32|tf32x3 and 1|2|4|8|16")
    return dict(PREC=prec, num_warps=int(warps))


def _meta(c: int, k: int, v: int) -> dict:
    if c < 16 or c & (c - 1):
        raise ValueError(f"the Triton GDN scan needs a power-of-two chunk size >= 16, got {c}")
    bk, bv = max(16, triton.next_power_of_2(k)), max(16, triton.next_power_of_2(v))
    return dict(C=c, BK=bk, BV=bv, **launch_options())


def wy_forward(k, v, g, beta, chunk_tok, chunk_len, chunk: int):
    """k [tokens, H, K], v [tokens, H, V], g, beta [tokens, H] -> (w, u, kd chunk-major fp32, Γ_C [N, H])."""
    n, (_, h, kdim), vdim = chunk_tok.numel(), k.shape, v.shape[2]
    w = torch.empty(n, chunk, h, kdim, device=k.device, dtype=torch.float32)
    kd, u = torch.empty_like(w), torch.empty(n, chunk, h, vdim, device=k.device, dtype=torch.float32)
    gamma = torch.empty(n, h, device=k.device, dtype=torch.float32)
    _wy_fwd_kernel[(n, h)](k, v, g, beta, chunk_tok, chunk_len, w, u, kd, gamma, h, kdim, vdim,
                           LOG2C=chunk.bit_length() - 1, **_meta(chunk, kdim, vdim))
    return w, u, kd, gamma


def output_forward(q, k, g, states, v_new, chunk_tok, chunk_len, scale: float, out_dtype):
    n, c, h, vdim = v_new.shape
    o = torch.empty(q.shape[0], h, vdim, device=q.device, dtype=out_dtype)
    _output_fwd_kernel[(n, h)](q, k, g, states, v_new, chunk_tok, chunk_len, o, scale, h, q.shape[2], vdim,
                               **_meta(c, q.shape[2], vdim))
    return o


def output_backward(q, k, g, states, v_new, do, chunk_tok, chunk_len, scale: float):
    """-> (dq token-major in q's dtype, dk share [N, C, H, K], dγ share [N, C, H], dU, dS_0 per chunk)."""
    n, c, h, vdim = v_new.shape
    kdim = q.shape[2]
    dq = torch.empty_like(q)
    dk = torch.empty(n, c, h, kdim, device=q.device, dtype=torch.float32)
    dgam = torch.empty(n, c, h, device=q.device, dtype=torch.float32)
    dvn, dst = torch.empty_like(v_new), torch.empty_like(states)
    _output_bwd_kernel[(n, h)](q, k, g, states, v_new, do, chunk_tok, chunk_len, dq, dk, dgam, dvn, dst, scale,
                               h, kdim, vdim, **_meta(c, kdim, vdim))
    return dq, dk, dgam, dvn, dst


def wy_backward(k, v, g, beta, chunk_tok, chunk_len, dw, du, dkd, dgamma, dk_part, dgam_part):
    """-> (dk, dv, dg, dbeta) token-major in the inputs' dtypes."""
    n, c, h, kdim = dw.shape
    vdim = v.shape[2]
    dk, dv, dg, dbeta = torch.empty_like(k), torch.empty_like(v), torch.empty_like(g), torch.empty_like(beta)
    _wy_bwd_kernel[(n, h)](k, v, g, beta, chunk_tok, chunk_len, dw, du, dkd, dgamma, dk_part, dgam_part,
                           dk, dv, dg, dbeta, h, kdim, vdim, LOG2C=c.bit_length() - 1, **_meta(c, kdim, vdim))
    return dk, dv, dg, dbeta
