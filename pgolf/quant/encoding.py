"""How a quantized tensor is held: a scheme, its original dtype and shape, and named numpy
parts (no pickle anywhere). `decode` turns it back into a tensor.

Schemes:
- "raw": the tensor itself ("data"), stored fp16 for small floats (fp32 for control
  parameters), as the baseline does
- "int_row": symmetric integer codes per row ("q", int8 container, |q| <= 2^(bits-1) - 1)
  with an fp16 scale per row ("scale"); W = scale[:, None] · q
  optionally plus a low-rank LQER correction (parts "lqer_*", see pgolf.quant.lqer)
- "int_tensor": the same with one scale, for large non-2-D tensors
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

TENSOR_DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
LQER_PARTS = {"lqer_a", "lqer_a_scale", "lqer_b", "lqer_b_scale"}
_PARTS = {"raw": {"data"}, "int_row": {"q", "scale"}, "int_tensor": {"q", "scale"}}


@dataclass
class Encoded:
    scheme: str
    dtype: str  # torch dtype name of the original, restored on load
    shape: tuple[int, ...]
    parts: dict[str, np.ndarray]
    bits: int = 0  # code width of int schemes

    @property
    def has_lqer(self) -> bool:
        return LQER_PARTS <= set(self.parts)


def check_encoded(name: str, e: Encoded) -> None:
    """Raise ValueError unless `e` is well formed (it may come from a file)."""
    base = set(e.parts) - (LQER_PARTS if e.scheme == "int_row" else set())
    if e.dtype not in TENSOR_DTYPES or e.scheme not in _PARTS or base != _PARTS[e.scheme]:
        raise ValueError(f"tensor {name}: unknown dtype {e.dtype!r}, scheme {e.scheme!r} or parts {sorted(e.parts)}")
    if e.scheme != "raw" and not 2 <= e.bits <= 8:
        raise ValueError(f"tensor {name}: {e.bits}-bit codes")
    numel = int(np.prod(e.shape, dtype=np.int64))
    main = e.parts.get("data", e.parts.get("q"))
    if main.size != numel:
        raise ValueError(f"tensor {name}: {main.size} stored values for shape {e.shape}")
    if e.scheme == "int_row" and (len(e.shape) != 2 or e.parts["scale"].size != e.shape[0]):
        raise ValueError(f"tensor {name}: {e.parts['scale'].size} scales for scheme int_row and shape {e.shape}")
    if e.scheme == "int_tensor" and e.parts["scale"].size != 1:
        raise ValueError(f"tensor {name}: int_tensor needs exactly one scale")
    if e.scheme != "raw":
        limit = (1 << (e.bits - 1)) - 1
        q = e.parts["q"]
        if q.size and (int(q.min()) < -limit - 1 or int(q.max()) > limit):
            raise ValueError(f"tensor {name}: codes outside {e.bits} bits")


def decode(e: Encoded) -> Tensor:
    """Back to a tensor of the original dtype and shape."""
    target = getattr(torch, e.dtype)
    if e.scheme == "raw":
        return torch.from_numpy(e.parts["data"].copy()).to(target).reshape(e.shape)
    q = torch.from_numpy(e.parts["q"].astype(np.float32))
    scale = torch.from_numpy(e.parts["scale"].astype(np.float32))
    if e.scheme == "int_tensor":
        return (q * scale[0]).to(target).reshape(e.shape)
    w = q * scale[:, None]
    if e.has_lqer:
        from pgolf.quant.lqer import lqer_correction

        w = w + lqer_correction(e.parts, e.shape)
    return w.to(target)


def dequantize_state_dict(encoded: dict[str, Encoded]) -> dict[str, Tensor]:
    return {name: decode(e) for name, e in encoded.items()}
