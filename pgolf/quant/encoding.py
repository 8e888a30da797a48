"""How a quantized tensor is held: a scheme, its original dtype and shape, and named numpy
parts (no pickle anywhere). `decode` turns it back into a tensor.

Schemes:
- "raw": the tensor itself ("data"), stored fp16 for small floats (fp32 for control
  parameters unless export.control_dtype=fp16), as the baseline does
- "int_row": symmetric integer codes per row ("q", int8 container, |q| <= 2^(bits-1) - 1)
  with an fp16 scale per row ("scale"); W = scale[:, None] · q
  optionally plus a low-rank LQER correction (parts "lqer_*", see pgolf.quant.lqer)
  optionally with AWQ-lite column groups (pgolf.quant.awq): "awq_start" [n] (int32 start
  columns), "awq_q" [rows, n·g] (their codes, |q| <= 127; "q" holds 0 there) and "awq_scale"
  [rows] (fp16); W[:, start_i:start_i + g] = awq_scale[:, None] · awq_q[:, i·g:(i+1)·g]
- "int_tensor": the same with one scale, for large non-2-D tensors
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

TENSOR_DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
LQER_PARTS = {"lqer_a", "lqer_a_scale", "lqer_b", "lqer_b_scale"}
AWQ_PARTS = {"awq_start", "awq_q", "awq_scale"}
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

    @property
    def has_awq(self) -> bool:
        return AWQ_PARTS <= set(self.parts)


_MAX_NUMEL = 1 << 34
_PART_DTYPES = {  # numpy dtype kinds/sizes each part may have in a file
    "data": {"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "b1"},
    "q": {"i1"}, "scale": {"f2", "f4"},
    "lqer_a": {"i1"}, "lqer_b": {"i1"}, "lqer_a_scale": {"f2", "f4"}, "lqer_b_scale": {"f2", "f4"},
    "awq_start": {"i2", "i4"}, "awq_q": {"i1"}, "awq_scale": {"f2", "f4"},
}


def _part_shapes(e: Encoded) -> dict[str, tuple[int, ...]]:
    """The shape each part must have, given the tensor's shape (and the LQER rank it claims)."""
    if e.scheme == "raw":
        return {"data": e.shape}
    shapes = {"q": e.shape, "scale": (e.shape[0],) if e.scheme == "int_row" else (1,)}
    if e.scheme == "int_row" and e.has_lqer:
        shapes.update(_lqer_shapes(e))
    if e.scheme == "int_row" and e.has_awq:
        shapes.update(_awq_shapes(e))
    return shapes


def _lqer_shapes(e: Encoded) -> dict[str, tuple[int, ...]]:
    """LQER parts (pgolf.quant.lqer): A [rows, r] with 1 or `rows` scales, B flat [r·cols] with one
    scale per group of consecutive elements (the groups must tile B: -1 marks a shape none fits)."""
    rows, cols = e.shape
    a, a_scale, b_scale = e.parts["lqer_a"], e.parts["lqer_a_scale"], e.parts["lqer_b_scale"]
    rank = a.shape[1] if a.ndim == 2 and a.shape[1] > 0 else -1
    n = b_scale.shape[0] if b_scale.ndim == 1 else -1
    fits = rank > 0 and n > 0 and (rank * cols) % n == 0
    return {"lqer_a": (rows, rank), "lqer_a_scale": a_scale.shape if a_scale.shape in ((1,), (rows,)) else (-1,),
            "lqer_b": (rank * cols,), "lqer_b_scale": (n if fits else -1,)}


def _awq_shapes(e: Encoded) -> dict[str, tuple[int, ...]]:
    """AWQ parts: n starts, [rows, n·g] codes, [rows] scales; the groups must lie inside the
    matrix, in order and apart (-1 marks a shape that cannot fit)."""
    rows, cols = e.shape
    starts, q = e.parts["awq_start"], e.parts["awq_q"]
    n = starts.shape[0] if starts.ndim == 1 and starts.size else -1
    g = q.shape[1] // n if q.ndim == 2 and n > 0 and q.shape[1] % n == 0 else 0
    s = [int(v) for v in starts.tolist()] if n > 0 else []
    apart = g > 0 and all(b >= a + g for a, b in zip(s, s[1:])) and s[0] >= 0 and s[-1] + g <= cols
    return {"awq_start": (n if apart else -1,), "awq_q": (rows, n * g), "awq_scale": (rows,)}


def check_encoded(name: str, e: Encoded) -> None:
    """Raise ValueError unless `e` is well formed: it may come from a file, and nothing malformed
    may reach decode (which would fail late, allocate absurdly or load garbage)."""
    base = set(e.parts) - (LQER_PARTS | AWQ_PARTS if e.scheme == "int_row" else set())
    if e.dtype not in TENSOR_DTYPES or e.scheme not in _PARTS or base != _PARTS[e.scheme]:
        raise ValueError(f"tensor {name}: unknown dtype {e.dtype!r}, scheme {e.scheme!r} or parts {sorted(e.parts)}")
    if e.scheme == "int_row" and set(e.parts) & LQER_PARTS and not LQER_PARTS <= set(e.parts):
        raise ValueError(f"tensor {name}: incomplete LQER parts {sorted(set(e.parts) & LQER_PARTS)}")
    if e.scheme == "int_row" and set(e.parts) & AWQ_PARTS and not AWQ_PARTS <= set(e.parts):
        raise ValueError(f"tensor {name}: incomplete AWQ parts {sorted(set(e.parts) & AWQ_PARTS)}")
    if (not all(type(d) is int and d >= 0 for d in e.shape) or len(e.shape) > 8
            or int(np.prod(e.shape, dtype=np.float64)) > _MAX_NUMEL):
        raise ValueError(f"tensor {name}: bad shape {e.shape}")
    if e.scheme == "int_row" and len(e.shape) != 2:
        raise ValueError(f"tensor {name}: scheme int_row needs a 2-D shape, got {e.shape}")
    if e.scheme != "raw" and not 2 <= e.bits <= 8:
        raise ValueError(f"tensor {name}: {e.bits}-bit codes")
    for part, shape in _part_shapes(e).items():
        arr = e.parts[part]
        if not isinstance(arr, np.ndarray) or f"{arr.dtype.kind}{arr.dtype.itemsize}" not in _PART_DTYPES[part]:
            raise ValueError(f"tensor {name}: part {part} has dtype {getattr(arr, 'dtype', type(arr))}")
        if arr.shape != tuple(shape):
            raise ValueError(f"tensor {name}: part {part} has shape {arr.shape}, expected {tuple(shape)}")
    if e.scheme != "raw":
        limit = (1 << (e.bits - 1)) - 1
        q = e.parts["q"]
        if q.size and (int(q.min()) < -limit - 1 or int(q.max()) > limit):
            raise ValueError(f"tensor {name}: codes outside {e.bits} bits")
    if e.has_awq and e.parts["awq_q"].size and int(e.parts["awq_q"].min()) < -127:
        raise ValueError(f"tensor {name}: AWQ codes outside [-127, 127]")


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
    if e.has_awq:
        w = _with_awq(w, e.parts)
    if e.has_lqer:
        from pgolf.quant.lqer import lqer_correction

        w = w + lqer_correction(e.parts, e.shape)
    return w.to(target)


def _with_awq(w: Tensor, parts: dict[str, np.ndarray]) -> Tensor:
    """`w` with its AWQ-lite column groups decoded from their own codes and scales."""
    starts = parts["awq_start"].astype(np.int64).tolist()
    q = torch.from_numpy(parts["awq_q"].astype(np.float32))
    hi = q * torch.from_numpy(parts["awq_scale"].astype(np.float32))[:, None]
    g = q.shape[1] // len(starts)
    for i, start in enumerate(starts):
        w[:, start:start + g] = hi[:, i * g:(i + 1) * g]
    return w


def dequantize_state_dict(encoded: dict[str, Encoded]) -> dict[str, Tensor]:
    return {name: decode(e) for name, e in encoded.items()}
