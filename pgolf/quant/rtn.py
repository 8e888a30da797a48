"""Round-to-nearest quantization with clip scales (the baseline's export, spec §4.4)."""
from __future__ import annotations

import torch
from torch import Tensor

from pgolf.ops.quantize import codes_for, levels

BASELINE_CLIP_Q = 0.9999984  # the baseline's per-row percentile of |w|
CLIP_Q_SEARCH = (0.999, 0.9995, 0.9999, 0.99999, 1.0)  # the GDN record's int6 search


def percentile_rows(w: Tensor, q: float, bits: int) -> tuple[Tensor, Tensor]:
    """Clip each row at its q-quantile of |w|; as the baseline, round with the fp32 scale and
    store it fp16 (scale = clip / levels, at least 1 / levels)."""
    r = levels(bits)
    clip = torch.quantile(w.abs(), q, dim=1) if q < 1.0 else w.abs().amax(dim=1)
    scale = (clip / r).clamp_min(1.0 / r)
    return codes_for(torch.clamp(w, -clip[:, None], clip[:, None]), scale, bits), scale.to(torch.float16)


def rtn_rows(w: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """int8: the baseline's fixed percentile. Fewer bits: the percentile with the least MSE."""
    if bits == 8:
        return percentile_rows(w, BASELINE_CLIP_Q, 8)
    best = None
    for q in CLIP_Q_SEARCH:
        codes, scale = percentile_rows(w, q, bits)
        err = float(((codes.float() * scale.float()[:, None] - w) ** 2).sum())
        if best is None or err < best[0]:
            best = (err, codes, scale)
    return best[1], best[2]


def rowmax_int8(w: Tensor) -> tuple[Tensor, Tensor]:
    """The record's quant gate (spec §5.11): int8 per row, scale = row max |w| / 127 (stored fp16),
    no clipping and no floor (a gate's weights are far below the baseline's 1/127 floor).
    Codes are rounded with the fp32 scale, as the baseline does; an all-zero row codes to zeros."""
    scale = w.abs().amax(dim=1) / 127.0
    codes = torch.clamp(torch.round(w / torch.where(scale > 0, scale, 1.0)[:, None]), -127, 127).to(torch.int8)
    return codes, scale.to(torch.float16)


def rtn_tensor(w: Tensor) -> tuple[Tensor, Tensor]:
    """One int8 scale for a whole (non-2-D) tensor."""
    clip = float(torch.quantile(w.abs().flatten(), BASELINE_CLIP_Q))
    scale = torch.tensor([clip / 127.0 if clip > 0 else 1.0], dtype=torch.float32)
    return torch.clamp(torch.round(torch.clamp(w, -clip, clip) / scale), -127, 127).to(torch.int8), scale
