"""Post-training quantization of a state dict into plain arrays (no pickle).

Schemes, per tensor:
- "raw": kept as is; floats with <= 65,536 elements are stored fp16 (fp32 for control
  parameters), as the baseline does
- "int8_row": symmetric int8 per row, clip at the 99.99984th percentile of |w| per row,
  fp16 scale = clip/127 (at least 1/127): the baseline's export (spec §4.4)
- "int8_tensor": the same with one scale, for large non-2-D floats
- "int6_row": symmetric per row in [-31, 31] (an int8 container until bit packing), the
  clip percentile chosen per tensor from {99.9, 99.95, 99.99, 99.999, 100} by weight MSE
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pgolf.model.gpt import is_control

KEEP_FLOAT_MAX_NUMEL = 65_536
INT8_CLIP_Q = 0.9999984
INT6_CLIP_QS = (0.999, 0.9995, 0.9999, 0.99999, 1.0)
SCHEMES = ("int8", "int6")


@dataclass
class Encoded:
    """One tensor as stored: a scheme, its original dtype/shape, and named numpy parts."""

    scheme: str
    dtype: str  # torch dtype name of the original, restored on load
    shape: tuple[int, ...]
    parts: dict[str, np.ndarray]


def _np(t: Tensor) -> np.ndarray:
    return t.numpy().copy()


def _row_quant(w: Tensor, q: float, levels: int) -> tuple[Tensor, Tensor]:
    """As the baseline: round with the fp32 scale, store the scale as fp16."""
    clip = torch.quantile(w.abs(), q, dim=1) if q < 1.0 else w.abs().amax(dim=1)
    scale = (clip / levels).clamp_min(1.0 / levels)
    codes = torch.clamp(torch.round(torch.clamp(w, -clip[:, None], clip[:, None]) / scale[:, None]), -levels, levels)
    return codes.to(torch.int8), scale.to(torch.float16)


def _encode(name: str, t: Tensor, scheme: str) -> Encoded:
    t = t.detach().cpu().contiguous()
    dtype = str(t.dtype).removeprefix("torch.")
    if not t.is_floating_point():
        return Encoded("raw", dtype, tuple(t.shape), {"data": _np(t)})
    # Every stored part below is fp16/fp32/int8: numpy has no bf16, and none is needed.
    if t.numel() <= KEEP_FLOAT_MAX_NUMEL:
        stored = t.float() if is_control(name) else t.to(torch.float16)
        return Encoded("raw", dtype, tuple(t.shape), {"data": _np(stored)})
    w = t.float()
    if w.ndim == 2 and scheme == "int6" and name != "tok_emb.weight":  # the embedding stays int8
        best = None
        for q in INT6_CLIP_QS:
            codes, scale = _row_quant(w, q, 31)
            err = float(((codes.float() * scale.float()[:, None] - w) ** 2).sum())
            if best is None or err < best[0]:
                best = (err, codes, scale)
        return Encoded("int6_row", dtype, tuple(t.shape), {"q": _np(best[1]), "scale": _np(best[2])})
    if w.ndim == 2:
        codes, scale = _row_quant(w, INT8_CLIP_Q, 127)
        return Encoded("int8_row", dtype, tuple(t.shape), {"q": _np(codes), "scale": _np(scale)})
    clip = float(torch.quantile(w.abs().flatten(), INT8_CLIP_Q))
    scale = torch.tensor([clip / 127.0 if clip > 0 else 1.0], dtype=torch.float32)
    codes = torch.clamp(torch.round(torch.clamp(w, -clip, clip) / scale), -127, 127).to(torch.int8)
    return Encoded("int8_tensor", dtype, tuple(t.shape), {"q": _np(codes), "scale": _np(scale)})


def quantize_state_dict(state: dict[str, Tensor], scheme: str) -> dict[str, Encoded]:
    if scheme not in SCHEMES:
        raise ValueError(f"quant scheme must be one of {SCHEMES}, got {scheme!r}")
    return {name: _encode(name, t, scheme) for name, t in state.items()}


TENSOR_DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
_PARTS = {"raw": {"data"}, "int8_row": {"q", "scale"}, "int6_row": {"q", "scale"}, "int8_tensor": {"q", "scale"}}


def check_encoded(name: str, e: Encoded) -> None:
    """Raise ValueError unless `e` is well formed (it may come from a file)."""
    if e.dtype not in TENSOR_DTYPES or e.scheme not in _PARTS or set(e.parts) != _PARTS[e.scheme]:
        raise ValueError(f"tensor {name}: unknown dtype {e.dtype!r}, scheme {e.scheme!r} or parts {sorted(e.parts)}")
    numel = int(np.prod(e.shape, dtype=np.int64))
    main = e.parts.get("data", e.parts.get("q"))
    if main.size != numel:
        raise ValueError(f"tensor {name}: {main.size} stored values for shape {e.shape}")
    rows = {"int8_row": e.shape[0] if e.shape else -1, "int6_row": e.shape[0] if e.shape else -1, "int8_tensor": 1}
    if e.scheme in rows and e.parts["scale"].size != rows[e.scheme]:
        raise ValueError(f"tensor {name}: {e.parts['scale'].size} scales for scheme {e.scheme} and shape {e.shape}")


def decode(e: Encoded) -> Tensor:
    """Back to a tensor of the original dtype and shape."""
    target = getattr(torch, e.dtype)
    if e.scheme == "raw":
        return torch.from_numpy(e.parts["data"].copy()).to(target).reshape(e.shape)
    q = torch.from_numpy(e.parts["q"].astype(np.float32))
    scale = torch.from_numpy(e.parts["scale"].astype(np.float32))
    if e.scheme in ("int8_row", "int6_row"):
        out = q * scale[:, None]
    elif e.scheme == "int8_tensor":
        out = q * scale[0]
    else:
        raise ValueError(f"unknown scheme {e.scheme!r}")
    return out.to(target).reshape(e.shape)


def dequantize_state_dict(encoded: dict[str, Encoded]) -> dict[str, Tensor]:
    return {name: decode(e) for name, e in encoded.items()}
