"""Which quantization each tensor of a model gets (spec §5.11).

- non-float tensors: raw
- gate matrices (names containing "gate"): int8 per row, the record's quant gate
- floats with <= 65,536 elements: raw (fp16; control parameters fp32)
- the embedding / head: `embed_bits`; other matrices: `matrix_bits`
  - method "rtn": round-to-nearest (int8: the baseline's percentile clip; fewer bits: the
    percentile with the least weight MSE)
  - method "gptq": SDClip scales (clip sigmas by class: attention, MLP, embedding, other) and
    GPTQ codes from the layer's input Hessian (RTN on those scales if it has none)
- other large floats: int8 with one scale
Then LQER on the `lqer_top` matrices with the largest ‖W − Ŵ‖_F.
"""
from __future__ import annotations

import torch
from torch import Tensor

from pgolf.config import ExportConfig
from pgolf.model.gpt import is_control
from pgolf.quant.encoding import Encoded, decode
from pgolf.quant.gptq import gptq_codes, sdclip_scale
from pgolf.quant.lqer import GROUP, lqer_parts
from pgolf.quant.rtn import codes_for, rtn_rows, rtn_tensor

KEEP_FLOAT_MAX_NUMEL = 65_536
EMBEDDINGS = ("tok_emb.weight", "lm_head.weight")


def is_coded_matrix(name: str, t: Tensor) -> bool:
    """True for the tensors export codes with matrix_bits / embed_bits (what late QAT imitates):
    float matrices over KEEP_FLOAT_MAX_NUMEL that are not gates."""
    return t.is_floating_point() and t.ndim == 2 and "gate" not in name and t.numel() > KEEP_FLOAT_MAX_NUMEL


def tensor_class(name: str) -> str:
    if name in EMBEDDINGS:
        return "embed"
    if ".mixer." in name:  # every sequence mixer, GDN included, as before the rename
        return "attn"
    if ".mlp." in name:
        return "mlp"
    return "other"


def _np(t: Tensor):
    return t.detach().cpu().contiguous().numpy().copy()


def _encode_matrix(name: str, w: Tensor, cfg: ExportConfig, hessian: Tensor | None) -> Encoded:
    cls = tensor_class(name)
    bits = cfg.embed_bits if cls == "embed" else cfg.matrix_bits
    if cfg.method == "gptq":
        sigmas = {"embed": cfg.embed_clip_sigmas, "attn": cfg.attn_clip_sigmas, "mlp": cfg.mlp_clip_sigmas,
                  "other": cfg.matrix_clip_sigmas}[cls]
        scale = sdclip_scale(w, bits, sigmas)
        codes = (gptq_codes(w, hessian.to(w.device), scale.float(), bits) if hessian is not None
                 else codes_for(w, scale.float(), bits))
    else:
        codes, scale = rtn_rows(w, bits)
    return Encoded("int_row", "", tuple(w.shape), {"q": _np(codes), "scale": _np(scale)}, bits)


def quantize_state(state: dict[str, Tensor], cfg: ExportConfig,
                   hessians: dict[str, Tensor] | None = None) -> dict[str, Encoded]:
    out: dict[str, Encoded] = {}
    for name, t in state.items():
        t = t.detach().cpu()
        dtype = str(t.dtype).removeprefix("torch.")
        if not t.is_floating_point():
            out[name] = Encoded("raw", dtype, tuple(t.shape), {"data": _np(t)})
        elif "gate" in name and t.ndim == 2:
            codes, scale = rtn_rows(t.float(), 8)
            out[name] = Encoded("int_row", dtype, tuple(t.shape), {"q": _np(codes), "scale": _np(scale)}, 8)
        elif t.numel() <= KEEP_FLOAT_MAX_NUMEL:
            stored = t.float() if is_control(name) else t.to(torch.float16)
            out[name] = Encoded("raw", dtype, tuple(t.shape), {"data": _np(stored)})
        elif is_coded_matrix(name, t):
            e = _encode_matrix(name, t.float(), cfg, (hessians or {}).get(name))
            e.dtype = dtype
            out[name] = e
        else:
            codes, scale = rtn_tensor(t.float())
            out[name] = Encoded("int_tensor", dtype, tuple(t.shape), {"q": _np(codes), "scale": _np(scale)}, 8)
    if cfg.lqer_top > 0:
        _add_lqer(out, state, cfg)
    return out


def _add_lqer(out: dict[str, Encoded], state: dict[str, Tensor], cfg: ExportConfig) -> None:
    errors = {}
    for name, e in out.items():
        if e.scheme == "int_row" and "gate" not in name and (cfg.lqer_rank * e.shape[1]) % GROUP == 0:
            errors[name] = state[name].detach().cpu().float() - decode(e).float()
    ranked = sorted(errors, key=lambda n: -float(errors[n].norm()))
    for name in ranked[: cfg.lqer_top]:
        out[name].parts.update(lqer_parts(errors[name], cfg.lqer_rank))
