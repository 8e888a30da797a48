"""The gated delta rule (GatedDeltaNet) as a chunked scan: `pgolf::gdn_chunk_scan`.

Per head, with state S [K, V] (fp32), gate g_t <= 0 (log decay), β_t in (0, 1):
    S_t = e^{g_t}·S_{t-1} + k_t·(β_t·(v_t − e^{g_t}·S_{t-1}ᵀ k_t))ᵀ,     o_t = S_tᵀ (scale·q_t)
(spec §6.1). `pgolf.ops.reference.gdn_recurrent_reference` runs exactly that, token by token: the truth.

The chunked form processes C tokens at once. With Γ_i = exp(Σ_{j<=i} g_j) inside a chunk,
the chunk's "pseudo-values" U solve a unit lower-triangular system (the WY / UT form):
    (I + A) U = diag(β)·V − diag(βΓ)·K·S_0,   A_ij = β_i (Γ_i/Γ_j) k_iᵀk_j for i > j
so U = u − w·S_0 with u = T·diag(β)V, w = T·diag(βΓ)K, T = (I + A)⁻¹. Then
    O = (Q ⊙ Γ)·S_0 + (QKᵀ ⊙ Γ_i/Γ_j ⊙ [i >= j])·U
    S_C = Γ_C·S_0 + (K ⊙ Γ_C/Γ)ᵀ·U
Everything but the state hand-off between chunks is batched over all chunks; the hand-off
(`pgolf::gdn_state_pass`) is the one sequential part and has its own Triton kernels.

Sequences: a batch [B, T] is B sequences; with cu_seqlens (B = 1), the packed documents
are separate sequences, each starting from its own initial state (zeros by default), so
nothing flows from one document into the next. Each sequence is cut into its own chunks,
the last one padded with tokens that change nothing (k = v = q = 0, β = 0, g = 0).

Two implementations of the same chunked algorithm: Triton kernels (pgolf_kernels.gdn_chunk
for the per-chunk work, pgolf_kernels.gdn_state for the hand-off) on CUDA tensors and under
the interpreter, and batched torch below everywhere else and for fp64. Both write the
backward out by hand and recompute the per-chunk quantities (w, u, the states) from the
saved inputs instead of storing them.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from pgolf.ops.backend import kernel_module, use_triton

DEFAULT_CHUNK = 64


def _on_triton(q: Tensor) -> bool:
    return use_triton(q) and q.dtype != torch.float64  # fp64 (gradcheck) stays on the torch path


def _boundaries(b: int, t: int, cu_seqlens: Tensor | None) -> Tensor:
    """The sequences' token offsets [S + 1], int64 on the CPU: the kernels' grid size must be
    known on the host, so a GPU cu_seqlens costs one sync here."""
    if cu_seqlens is None:
        return torch.arange(b + 1, dtype=torch.int64) * t
    cu = cu_seqlens.detach().to("cpu", torch.int64)
    if b != 1 or cu.dim() != 1 or cu.numel() == 0 or cu[0] != 0 or cu[-1] != t or bool((cu[1:] < cu[:-1]).any()):
        raise ValueError(f"cu_seqlens must rise from 0 to T={t} and needs batch size 1, "
                         f"got {cu.tolist()} with B={b}")
    return cu


def seq_bounds(b: int, t: int, cu_seqlens: Tensor | None) -> list[tuple[int, int]]:
    cu = _boundaries(b, t, cu_seqlens).tolist()
    return list(zip(cu[:-1], cu[1:]))


def _chunk_table(cu: Tensor, chunk: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """(first token of each chunk [N], its valid length [N], first chunk of each sequence [S + 1]).
    An empty sequence still gets one chunk (of length 0), so that its state passes through."""
    seq_len = cu[1:] - cu[:-1]
    n = ((seq_len + chunk - 1) // chunk).clamp_min(1)
    starts = torch.cat([n.new_zeros(1), n.cumsum(0)])
    seq = torch.repeat_interleave(torch.arange(n.numel()), n)  # the sequence of each chunk
    j = torch.arange(int(starts[-1])) - starts[seq]  # the chunk's place in its sequence
    tok, lens = cu[:-1][seq] + j * chunk, (seq_len[seq] - j * chunk).clamp(0, chunk)
    return tok.to(device), lens.to(device=device, dtype=torch.int32), starts.to(device)


def _layout(cu: Tensor, chunk: int, device) -> tuple[Tensor, Tensor]:
    """(token index of each chunk slot [N, C], -1 for padding; first chunk of each sequence [S + 1])."""
    tok, lens, starts = _chunk_table(cu, chunk, "cpu")
    slot = torch.arange(chunk)
    index = torch.where(slot[None, :] < lens[:, None], tok[:, None] + slot[None, :], -1)
    return index.to(device), starts.to(device)


def _gather(x: Tensor, index: Tensor) -> Tensor:
    """[tokens, ...] -> [N, C, ...] with zeros in padding slots."""
    if x.shape[0] == 0:  # an empty sequence: only padding
        return x.new_zeros(*index.shape, *x.shape[1:])
    flat = index.clamp_min(0).reshape(-1)
    out = x[flat].reshape(*index.shape, *x.shape[1:])
    return out * (index >= 0).reshape(*index.shape, *([1] * (x.dim() - 1))).to(out.dtype)


class _WY(NamedTuple):
    """Per-chunk quantities of the WY form, with the intermediates the backward needs."""
    gam: Tensor  # γ = cumsum(g) [N, C, H]; Γ = exp(γ)
    decay: Tensor  # D = Γ_i/Γ_j on and below the diagonal, 0 above [N, H, C, C]
    kk: Tensor  # KKᵀ [N, H, C, C]
    tinv: Tensor  # T = (I + A)⁻¹, A = β·KKᵀ ⊙ D strictly lower [N, H, C, C]
    bk: Tensor  # βΓK [N, C, H, K]
    bv: Tensor  # βV [N, C, H, V]
    w: Tensor  # T·βΓK
    u: Tensor  # T·βV
    edec: Tensor  # Γ_C/Γ_i [N, C, H]
    kdec: Tensor  # kd = K ⊙ Γ_C/Γ_i
    gamma: Tensor  # Γ_C [N, H]


def _wy(kc, vc, gc, bc) -> _WY:
    gam = torch.cumsum(gc, dim=1)
    gexp = gam.exp()
    gam_h = gam.permute(0, 2, 1)  # [N, H, C]
    c = gc.shape[1]
    causal = torch.ones(c, c, dtype=torch.bool, device=gc.device).tril()
    diff = gam_h[:, :, :, None] - gam_h[:, :, None, :]  # log(Γ_i/Γ_j)
    decay = torch.where(causal, diff, torch.full_like(diff, float("-inf"))).exp()
    kk = torch.einsum("nihk,njhk->nhij", kc, kc)
    a = (bc.permute(0, 2, 1)[..., None] * kk * decay).tril(-1)
    eye = torch.eye(c, dtype=a.dtype, device=a.device).expand_as(a)
    tinv = torch.linalg.solve_triangular(eye + a, eye, upper=False, unitriangular=True)
    bk, bv = (bc * gexp)[..., None] * kc, bc[..., None] * vc
    w, u = torch.einsum("nhij,njhk->nihk", tinv, bk), torch.einsum("nhij,njhv->nihv", tinv, bv)
    edec = torch.exp(gam[:, -1:, :] - gam)
    return _WY(gam, decay, kk, tinv, bk, bv, w, u, edec, kc * edec[..., None], gexp[:, -1, :])


def _output(qc, kc, gam, decay, states, v_new):
    """O = (Q ⊙ Γ)·S_0 + (QKᵀ ⊙ Γ_i/Γ_j ⊙ [i >= j])·U, with Q already scaled."""
    inter = torch.einsum("nihk,nhkv->nihv", qc * gam.exp()[..., None], states)
    scores = torch.einsum("nihk,njhk->nhij", qc, kc) * decay
    return inter + torch.einsum("nhij,njhv->nihv", scores, v_new)


# ---------------------------------------------------------------------------------------
# pgolf::gdn_state_pass: the sequential hand-off of the state between chunks.
#   for each sequence s, for its chunks c in order (S = S0[s] at the start):
#       states[c] = S;  v_new[c] = u[c] − w[c]·S;  S = Γ_C[c]·S + kd[c]ᵀ·v_new[c]
#   final[s] = S


def _state_pass_torch(w, u, kd, gamma, s0, starts):
    lengths = (starts[1:] - starts[:-1]).tolist()
    first = starts[:-1]
    v_new = torch.empty_like(u)
    states = torch.empty(w.shape[0], w.shape[2], w.shape[3], u.shape[3], dtype=w.dtype, device=w.device)
    state = s0.clone()
    for j in range(max(lengths)):
        alive = torch.tensor([j < n for n in lengths], device=w.device)
        idx = (first + j).clamp_max(w.shape[0] - 1)
        sa = state[alive]
        c = idx[alive]
        states[c] = sa
        vn = u[c] - torch.einsum("nchk,nhkv->nchv", w[c], sa)
        v_new[c] = vn
        state[alive] = gamma[c][..., None, None] * sa + torch.einsum("nchk,nchv->nhkv", kd[c], vn)
    return v_new, states, state


def _state_pass_backward_torch(w, kd, gamma, states, v_new, starts, d_vnew, d_states, d_final):
    lengths = (starts[1:] - starts[:-1]).tolist()
    first = starts[:-1]
    dw, du, dkd = torch.empty_like(w), torch.empty_like(v_new), torch.empty_like(kd)
    dgamma = torch.empty_like(gamma)
    ds = d_final.clone()
    for j in reversed(range(max(lengths))):
        alive = torch.tensor([j < n for n in lengths], device=w.device)
        c = (first + j)[alive]
        dsa = ds[alive]
        dvn = d_vnew[c] + torch.einsum("nchk,nhkv->nchv", kd[c], dsa)
        du[c] = dvn
        dw[c] = -torch.einsum("nchv,nhkv->nchk", dvn, states[c])
        dkd[c] = torch.einsum("nchv,nhkv->nchk", v_new[c], dsa)
        dgamma[c] = (states[c] * dsa).sum(dim=(-2, -1))
        ds[alive] = d_states[c] + gamma[c][..., None, None] * dsa - torch.einsum("nchk,nchv->nhkv", w[c], dvn)
    return dw, du, dkd, dgamma, ds


@torch.library.custom_op("pgolf::gdn_state_pass", mutates_args=())
def gdn_state_pass_op(w: Tensor, u: Tensor, kd: Tensor, gamma: Tensor, s0: Tensor,
                      starts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(v_new [N, C, H, V], states at each chunk's start [N, H, K, V], final states [S, H, K, V])."""
    if _on_triton(w):
        return kernel_module("gdn_state").state_pass_forward(w, u, kd, gamma, s0, starts)
    return _state_pass_torch(w, u, kd, gamma, s0, starts)


@gdn_state_pass_op.register_fake
def _(w, u, kd, gamma, s0, starts):
    n, c, h, k = w.shape
    return u.new_empty(u.shape), w.new_empty((n, h, k, u.shape[3])), s0.new_empty(s0.shape)


@torch.library.custom_op("pgolf::gdn_state_pass_backward", mutates_args=())
def gdn_state_pass_backward_op(w: Tensor, kd: Tensor, gamma: Tensor, states: Tensor, v_new: Tensor, starts: Tensor,
                               d_vnew: Tensor, d_states: Tensor,
                               d_final: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dw, du, dkd, dgamma, ds0): the same pass run backwards over the chunks."""
    if _on_triton(w):
        return kernel_module("gdn_state").state_pass_backward(w, kd, gamma, states, v_new, starts, d_vnew, d_states,
                                                              d_final)
    return _state_pass_backward_torch(w, kd, gamma, states, v_new, starts, d_vnew, d_states, d_final)


@gdn_state_pass_backward_op.register_fake
def _(w, kd, gamma, states, v_new, starts, d_vnew, d_states, d_final):
    return w.new_empty(w.shape), v_new.new_empty(v_new.shape), kd.new_empty(kd.shape), gamma.new_empty(gamma.shape), \
        d_final.new_empty(d_final.shape)


def _state_setup(ctx, inputs, output):
    w, u, kd, gamma, s0, starts = inputs
    v_new, states, _ = output
    ctx.save_for_backward(w, kd, gamma, states, v_new, starts)


def _state_backward(ctx, d_vnew, d_states, d_final):
    w, kd, gamma, states, v_new, starts = ctx.saved_tensors
    d_vnew = torch.zeros_like(v_new) if d_vnew is None else d_vnew.contiguous()
    d_states = torch.zeros_like(states) if d_states is None else d_states.contiguous()
    if d_final is None:
        d_final = states.new_zeros(starts.numel() - 1, *states.shape[1:])
    dw, du, dkd, dgamma, ds0 = gdn_state_pass_backward_op(w, kd, gamma, states, v_new, starts, d_vnew, d_states,
                                                          d_final.contiguous())
    return dw, du, dkd, dgamma, ds0, None


gdn_state_pass_op.register_autograd(_state_backward, setup_context=_state_setup)


# ---------------------------------------------------------------------------------------
# pgolf::gdn_chunk_scan


def _to_chunks(xs, s0, cu_seqlens, chunk):
    """(q, k, v, ...) [B, T, ...] -> (chunk index, sequence starts, initial states [S, H, K, V],
    each x chunk-major [N, C, ...] in the accumulation dtype: fp64 for fp64 inputs, else fp32)."""
    q, v = xs[0], xs[2]
    b, t, h, kdim = q.shape
    index, starts = _layout(_boundaries(b, t, cu_seqlens), chunk, q.device)
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    chunks = [_gather(x.reshape(b * t, *x.shape[2:]).to(acc), index) for x in xs]
    n_seq = starts.numel() - 1
    init = s0.to(acc) if s0 is not None else torch.zeros(n_seq, h, kdim, v.shape[-1], dtype=acc, device=q.device)
    return index, starts, init, chunks


def _chunk_forward(q, k, v, g, beta, s0, cu_seqlens, scale, chunk):
    b, t, h = q.shape[:3]
    index, starts, init, (qc, kc, vc, gc, bc) = _to_chunks((q, k, v, g, beta), s0, cu_seqlens, chunk)
    wy = _wy(kc, vc, gc, bc)
    v_new, states, final = gdn_state_pass_op(wy.w, wy.u, wy.kdec, wy.gamma, init, starts)
    oc = _output(qc * scale, kc, wy.gam, wy.decay, states, v_new)
    keep = index.reshape(-1) >= 0
    out = oc.reshape(-1, h, v.shape[-1])[keep]  # slots in token order: sequences are contiguous, pads trail each
    return out.reshape(b, t, h, v.shape[-1]), final


def _check(q, k, v, g, beta, initial_state, cu_seqlens):
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3] or g.shape != q.shape[:3] or beta.shape != g.shape:
        raise ValueError(f"expected q, k [B, T, H, K], v [B, T, H, V], g, beta [B, T, H]; got "
                         f"{[tuple(x.shape) for x in (q, k, v, g, beta)]}")
    n_seq = q.shape[0] if cu_seqlens is None else cu_seqlens.numel() - 1
    if initial_state is not None and initial_state.shape != (n_seq, q.shape[2], q.shape[3], v.shape[3]):
        raise ValueError(f"initial_state must be [{n_seq}, H, K, V], got {tuple(initial_state.shape)}")


def _triton_inputs(q, k, v, g, beta, s0, cu_seqlens, chunk):
    b, t, h, kdim = q.shape
    tok, lens, starts = _chunk_table(_boundaries(b, t, cu_seqlens), chunk, q.device)
    flat = [x.reshape(b * t, *x.shape[2:]).contiguous() for x in (q, k, v, g, beta)]
    n_seq = starts.numel() - 1
    init = s0.float().contiguous() if s0 is not None else q.new_zeros(n_seq, h, kdim, v.shape[-1],
                                                                        dtype=torch.float32)
    return flat, tok, lens, starts, init


def _chunk_forward_triton(q, k, v, g, beta, s0, cu_seqlens, scale, chunk):
    (qf, kf, vf, gf, bf), tok, lens, starts, init = _triton_inputs(q, k, v, g, beta, s0, cu_seqlens, chunk)
    kernels = kernel_module("gdn_chunk")
    w, u, kdec, gamma = kernels.wy_forward(kf, vf, gf, bf, tok, lens, chunk)
    v_new, states, final = gdn_state_pass_op(w, u, kdec, gamma, init, starts)
    o = kernels.output_forward(qf, kf, gf, states, v_new, tok, lens, scale, v.dtype)
    return o.view(v.shape), final


def _chunk_backward_triton(q, k, v, g, beta, s0, cu_seqlens, scale, chunk, do, dfinal):
    (qf, kf, vf, gf, bf), tok, lens, starts, init = _triton_inputs(q, k, v, g, beta, s0, cu_seqlens, chunk)
    kernels = kernel_module("gdn_chunk")
    w, u, kdec, gamma = kernels.wy_forward(kf, vf, gf, bf, tok, lens, chunk)
    v_new, states, _ = gdn_state_pass_op(w, u, kdec, gamma, init, starts)
    dq, dk_part, dgam_part, d_vnew, d_states = kernels.output_backward(
        qf, kf, gf, states, v_new, do.reshape(vf.shape).contiguous(), tok, lens, scale)
    dw, du, dkdec, dgamma, ds0 = gdn_state_pass_backward_op(w, kdec, gamma, states, v_new, starts, d_vnew,
                                                            d_states, dfinal.float().contiguous())
    dk, dv, dg, dbeta = kernels.wy_backward(kf, vf, gf, bf, tok, lens, dw, du, dkdec, dgamma, dk_part, dgam_part)
    return dq.view(q.shape), dk.view(k.shape), dv.view(v.shape), dg.view(g.shape), dbeta.view(beta.shape), ds0


@torch.library.custom_op("pgolf::gdn_chunk_scan", mutates_args=())
def gdn_chunk_scan_op(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, initial_state: Optional[Tensor],
                      cu_seqlens: Optional[Tensor], scale: float, chunk_size: int) -> tuple[Tensor, Tensor]:
    run = _chunk_forward_triton if _on_triton(q) else _chunk_forward
    with torch.no_grad():
        o, final = run(q, k, v, g, beta, initial_state, cu_seqlens, scale, chunk_size)
    return o.to(v.dtype), final.float() if q.dtype != torch.float64 else final


@gdn_chunk_scan_op.register_fake
def _(q, k, v, g, beta, initial_state, cu_seqlens, scale, chunk_size):
    n_seq = q.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1
    state_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return v.new_empty(v.shape), q.new_empty((n_seq, q.shape[2], q.shape[3], v.shape[3]), dtype=state_dtype)


def _chunk_backward(q, k, v, g, beta, s0, cu_seqlens, scale, chunk, do, dfinal):
    """Gradients of the chunked forward, written out (no autograd inside an op).

    Recomputes the per-chunk quantities, then walks the forward backwards: the output
    products, the state pass (its own backward op), the decayed keys, w and u, the
    triangular inverse (dA = −Tᵀ·dT·Tᵀ, strictly lower part), A = β·KKᵀ ⊙ D, the decay
    matrix and finally the cumulative sum of the gates.
    """
    b, t = q.shape[:2]
    index, starts, init, (qc, kc, vc, gc, bc, doc) = _to_chunks((q, k, v, g, beta, do), s0, cu_seqlens, chunk)
    acc = qc.dtype
    gam, decay, kk, tinv, bk, bv, w, u, edec, kdec, gamma = _wy(kc, vc, gc, bc)
    gexp, beta_h = gam.exp(), bc.permute(0, 2, 1)
    v_new, states, _ = gdn_state_pass_op(w, u, kdec, gamma, init, starts)
    qs = qc * scale

    # o = (Qs ⊙ Γ)·S + ((Qs Kᵀ) ⊙ D)·U
    qg = qs * gexp[..., None]
    d_states = torch.einsum("nihk,nihv->nhkv", qg, doc)
    d_qg = torch.einsum("nihv,nhkv->nihk", doc, states)
    d_qs = d_qg * gexp[..., None]
    d_gam = (d_qg * qs).sum(-1) * gexp
    qk = torch.einsum("nihk,njhk->nhij", qs, kc)
    scores = qk * decay
    d_vnew = torch.einsum("nhij,nihv->njhv", scores, doc)
    d_scores = torch.einsum("nihv,njhv->nhij", doc, v_new)
    d_qk = d_scores * decay
    d_decay = d_scores * qk
    d_qs = d_qs + torch.einsum("nhij,njhk->nihk", d_qk, kc)
    d_k = torch.einsum("nhij,nihk->njhk", d_qk, qs)

    # the state pass
    dw, du, dkdec, dgamma, ds0 = gdn_state_pass_backward_op(w, kdec, gamma, states, v_new, starts,
                                                            d_vnew.contiguous(), d_states.contiguous(),
                                                            dfinal.to(acc).contiguous())
    # kd = K ⊙ Γ_C/Γ_i and Γ_C
    d_k = d_k + dkdec * edec[..., None]
    d_e = (dkdec * kc).sum(-1) * edec  # d(log edec_i)
    d_gam = d_gam - d_e
    d_gam[:, -1, :] += d_e.sum(1) + dgamma * gamma
    # w = T·(βΓK), u = T·(βV)
    d_t = torch.einsum("nihk,njhk->nhij", dw, bk) + torch.einsum("nihv,njhv->nhij", du, bv)
    d_bk = torch.einsum("nhij,nihk->njhk", tinv, dw)
    d_bv = torch.einsum("nhij,nihv->njhv", tinv, du)
    d_k = d_k + d_bk * (bc * gexp)[..., None]
    d_bg = (d_bk * kc).sum(-1)  # d(βΓ)
    d_beta = d_bg * gexp + (d_bv * vc).sum(-1)
    d_gam = d_gam + d_bg * bc * gexp
    d_v = d_bv * bc[..., None]
    # T = (I + A)⁻¹, A strictly lower
    d_a = -(tinv.transpose(-1, -2) @ d_t @ tinv.transpose(-1, -2)).tril(-1)
    d_kk = d_a * beta_h[..., None] * decay
    d_beta = d_beta + (d_a * kk * decay).sum(-1).permute(0, 2, 1)
    d_decay = d_decay + d_a * beta_h[..., None] * kk
    d_k = d_k + torch.einsum("nhij,njhk->nihk", d_kk + d_kk.transpose(-1, -2), kc)
    # D_ij = exp(γ_i − γ_j) on and below the diagonal
    dd = d_decay * decay
    d_gam = d_gam + (dd.sum(-1) - dd.sum(-2)).permute(0, 2, 1)
    d_g = d_gam.flip(1).cumsum(1).flip(1)  # γ = cumsum(g)

    def scatter(xc, like):  # chunk slots back to tokens; padding slots drop out
        out = torch.zeros(b * t, *xc.shape[2:], dtype=acc, device=q.device)
        keep = index.reshape(-1) >= 0
        out[index.reshape(-1)[keep]] = xc.reshape(-1, *xc.shape[2:])[keep]
        return out.reshape(like.shape).to(like.dtype)

    return (scatter(d_qs * scale, q), scatter(d_k, k), scatter(d_v, v), scatter(d_g, g), scatter(d_beta, beta),
            ds0)


@torch.library.custom_op("pgolf::gdn_chunk_scan_backward", mutates_args=())
def gdn_chunk_scan_backward_op(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor,
                               initial_state: Optional[Tensor], cu_seqlens: Optional[Tensor], scale: float,
                               chunk_size: int, do: Tensor, dfinal: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor,
                                                                                     Tensor, Tensor]:
    run = _chunk_backward_triton if _on_triton(q) else _chunk_backward
    dq, dk, dv, dg, dbeta, ds0 = run(q, k, v, g, beta, initial_state, cu_seqlens, scale, chunk_size, do, dfinal)
    ds0 = ds0.to(initial_state.dtype) if initial_state is not None else q.new_empty(0)
    return dq, dk, dv, dg, dbeta, ds0


@gdn_chunk_scan_backward_op.register_fake
def _(q, k, v, g, beta, initial_state, cu_seqlens, scale, chunk_size, do, dfinal):
    ds0 = initial_state.new_empty(initial_state.shape) if initial_state is not None else q.new_empty(0)
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), g.new_empty(g.shape),
            beta.new_empty(beta.shape), ds0)


def _scan_setup(ctx, inputs, output):
    q, k, v, g, beta, initial_state, cu_seqlens, scale, chunk_size = inputs
    ctx.save_for_backward(q, k, v, g, beta, initial_state, cu_seqlens)
    ctx.scale, ctx.chunk_size = scale, chunk_size
    ctx.has_init = initial_state is not None


def _scan_backward(ctx, do, dfinal):
    q, k, v, g, beta, initial_state, cu_seqlens = ctx.saved_tensors
    if do is None:
        do = torch.zeros_like(v)
    if dfinal is None:
        n_seq = q.shape[0] if cu_seqlens is None else cu_seqlens.numel() - 1
        dfinal = torch.zeros(n_seq, q.shape[2], q.shape[3], v.shape[3], dtype=torch.float32, device=q.device)
    dq, dk, dv, dg, dbeta, ds0 = gdn_chunk_scan_backward_op(q, k, v, g, beta, initial_state, cu_seqlens, ctx.scale,
                                                            ctx.chunk_size, do, dfinal)
    return dq, dk, dv, dg, dbeta, (ds0 if ctx.has_init else None), None, None, None


gdn_chunk_scan_op.register_autograd(_scan_backward, setup_context=_scan_setup)


def gdn_chunk_scan(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, initial_state: Tensor | None = None,
                   cu_seqlens: Tensor | None = None, scale: float | None = None,
                   chunk_size: int = DEFAULT_CHUNK) -> tuple[Tensor, Tensor]:
    """Gated delta rule over q, k [B, T, H, K], v [B, T, H, V], g (log decay <= 0), beta [B, T, H].

    Returns (o [B, T, H, V] in v's dtype, final state [S, H, K, V] fp32). With `cu_seqlens`
    ([S + 1], B = 1) the packed sequences are independent. scale defaults to K^-1/2.
    """
    _check(q, k, v, g, beta, initial_state, cu_seqlens)
    if chunk_size < 1 or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size must be a power of two, got {chunk_size}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return gdn_chunk_scan_op(q, k, v, g, beta, initial_state, cu_seqlens, scale, int(chunk_size))
