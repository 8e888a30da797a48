"""Which quantization each tensor of a model gets (spec §5.11), from its parameter role
(pgolf.model.roles: `Role.quant`, `bits`, `clip_class`).

- non-float tensors: raw
- gates: int8 per row with row-max / 127 scales (the record's quant gate; with `quant_gate`
  off, or a float gate such as the SmearGate's, fp16 passthrough)
- controls: raw fp32 (exact), or with `control_dtype` fp16 the passthrough below (the records)
- other floats with <= 65,536 elements: raw fp16 (passthrough)
- coded roles (matrices, embedding, head, n-gram table): `embed_bits` for the embedding /
  head, `matrix_bits` for the others
  - method "rtn": round-to-nearest (int8: the baseline's percentile clip; fewer bits: the
    percentile with the least weight MSE)
  - method "gptq": SDClip scales (clip sigmas by the role's class: attn, mlp, embed, other)
    and GPTQ codes from the layer's input Hessian (RTN on those scales if it has none);
    with `awq_lite`, the `awq_group_top_k` most salient column groups of all the tensors under
    `awq_bits` that have a Hessian are coded at `awq_bits` in the same solve (pgolf.quant.awq)
- other large floats (conv taps, norms of a huge model): int8 with one scale
Then LQER on the `lqer_top` coded matrices with the largest ‖W − Ŵ‖_F (of the realised weight,
AWQ groups included), packed as `lqer_asym_group` / `lqer_factor_bits` say (pgolf.quant.lqer).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from pgolf.config import ExportConfig
from pgolf.errors import PgolfError
from pgolf.model.roles import Role, RoleError
from pgolf.quant.encoding import Encoded, decode
from pgolf.ops.quantize import codes_for, sdclip_scale
from pgolf.quant.rtn import rowmax_int8, rtn_rows, rtn_tensor

KEEP_FLOAT_MAX_NUMEL = 65_536


def is_coded(role: Role, t: Tensor) -> bool:
    """True for the tensors export codes with matrix_bits / embed_bits (what late QAT imitates):
    float matrices of a coded role over KEEP_FLOAT_MAX_NUMEL elements."""
    return role.quant == "coded" and t.is_floating_point() and t.ndim == 2 and t.numel() > KEEP_FLOAT_MAX_NUMEL


def clip_sigmas(cfg: ExportConfig, role: Role) -> float:
    """The SDClip k of a coded role's class."""
    return {"embed": cfg.embed_clip_sigmas, "attn": cfg.attn_clip_sigmas, "mlp": cfg.mlp_clip_sigmas,
            "other": cfg.matrix_clip_sigmas}[role.clip_class]


def _np(t: Tensor):
    return t.detach().cpu().contiguous().numpy().copy()


def _bits(role: Role, cfg: ExportConfig) -> int:
    return cfg.embed_bits if role.bits == "embed" else cfg.matrix_bits


def _encode_matrix(w: Tensor, role: Role, cfg: ExportConfig, hessian: Tensor | None,
                   awq_starts: list[int] | None = None) -> Encoded:
    bits = _bits(role, cfg)
    parts = {}
    if cfg.method == "gptq":
        from pgolf.quant.gptq import gptq_codes  # gptq only (pgolf.export.trace.OPTIONAL)

        k = clip_sigmas(cfg, role)
        scale = sdclip_scale(w, bits, k)
        if hessian is None:
            codes = codes_for(w, scale.float(), bits)
        elif awq_starts:
            from pgolf.quant.awq import column_mask  # awq_lite only (pgolf.export.trace.OPTIONAL)

            mask = column_mask(w.shape[1], awq_starts, cfg.awq_group_size)
            hi_scale = sdclip_scale(w, cfg.awq_bits, k)  # s_hi = k·std(row) / R_hi
            codes = gptq_codes(w, hessian.to(w.device), scale.float(), bits, hi_cols=mask.to(w.device),
                               hi_scale=hi_scale.float(), hi_bits=cfg.awq_bits)
            parts = {"awq_start": np.asarray(awq_starts, dtype=np.int32), "awq_q": _np(codes[:, mask]),
                     "awq_scale": _np(hi_scale)}
            codes[:, mask] = 0  # "q" stays within `bits`; the group's codes live in awq_q
        else:
            codes = gptq_codes(w, hessian.to(w.device), scale.float(), bits)
    else:
        codes, scale = rtn_rows(w, bits)
    return Encoded("int_row", "", tuple(w.shape), {"q": _np(codes), "scale": _np(scale), **parts}, bits)


def _encode(t: Tensor, role: Role, cfg: ExportConfig, hessian: Tensor | None,
            awq_starts: list[int] | None = None) -> Encoded:
    dtype = str(t.dtype).removeprefix("torch.")
    if role.quant == "int8_rowmax" and t.ndim == 2 and cfg.quant_gate:
        codes, scale = rowmax_int8(t.float())
        return Encoded("int_row", dtype, tuple(t.shape), {"q": _np(codes), "scale": _np(scale)}, 8)
    if role.quant == "control" and cfg.control_dtype == "fp32":
        return Encoded("raw", dtype, tuple(t.shape), {"data": _np(t.float())})
    if t.numel() <= KEEP_FLOAT_MAX_NUMEL:
        return Encoded("raw", dtype, tuple(t.shape), {"data": _np(t.to(torch.float16))})
    if is_coded(role, t):
        e = _encode_matrix(t.float(), role, cfg, hessian, awq_starts)
        e.dtype = dtype
        return e
    codes, scale = rtn_tensor(t.float())
    return Encoded("int_tensor", dtype, tuple(t.shape), {"q": _np(codes), "scale": _np(scale)}, 8)


def quantize_state(state: dict[str, Tensor], cfg: ExportConfig, roles: Mapping[str, Role],
                   hessians: dict[str, Tensor] | None = None) -> dict[str, Encoded]:
    """Each tensor of `state` encoded as its role says (`roles`: pgolf.model.param_roles)."""
    out: dict[str, Encoded] = {}
    awq = _awq_groups(state, cfg, roles, hessians or {})
    for name, t in state.items():
        t = t.detach().cpu()
        if not t.is_floating_point():
            out[name] = Encoded("raw", str(t.dtype).removeprefix("torch."), tuple(t.shape), {"data": _np(t)})
            continue
        if name not in roles:
            raise RoleError(f"tensor {name} has no parameter role: its model does not declare it")
        out[name] = _encode(t, roles[name], cfg, (hessians or {}).get(name), awq.get(name))
        if not bool(torch.isfinite(t).all()) or not bool(torch.isfinite(decode(out[name]).float()).all()):
            # nan/inf weights, or values past what their stored form holds (fp16 passthrough, fp16 scales)
            raise PgolfError(f"not exported: tensor {name} is not finite as stored (largest |value| "
                             f"{float(t.float().abs().nan_to_num(float('inf')).max()):.3g}): the model diverged")
    if cfg.lqer_top > 0:
        _add_lqer(out, state, roles, cfg)
    return out


def _awq_groups(state: dict[str, Tensor], cfg: ExportConfig, roles: Mapping[str, Role],
                hessians: dict[str, Tensor]) -> dict[str, list[int]]:
    """AWQ-lite's protected groups: {tensor: start columns} (none unless gptq with awq_lite)."""
    if not (cfg.method == "gptq" and cfg.awq_lite):
        return {}
    from pgolf.quant.awq import select_groups  # awq_lite only (pgolf.export.trace.OPTIONAL)

    candidates = {name: t.detach().cpu().float() for name, t in state.items()
                  if name in roles and name in hessians and is_coded(roles[name], t)
                  and _bits(roles[name], cfg) < cfg.awq_bits}
    return select_groups(candidates, {n: hessians[n].cpu() for n in candidates}, cfg.awq_group_size,
                         cfg.awq_group_top_k)


def _add_lqer(out: dict[str, Encoded], state: dict[str, Tensor], roles: Mapping[str, Role], cfg: ExportConfig) -> None:
    from pgolf.quant.lqer import lqer_parts  # lqer_top > 0 only (pgolf.export.trace.OPTIONAL)

    errors = {name: state[name].detach().cpu().float() - decode(e).float() for name, e in out.items()
              if e.scheme == "int_row" and roles[name].quant == "coded"}
    ranked = sorted(errors, key=lambda n: -float(errors[n].norm()))
    for name in ranked[: cfg.lqer_top]:
        out[name].parts.update(lqer_parts(errors[name], cfg.lqer_rank, cfg.lqer_asym_group, cfg.lqer_factor_bits))
