"""Symmetric per-row integer quantization: the primitives that both late QAT (the int6 op's
fake-quant forward) and export (pgolf.quant) compute, so that training and the artifact agree
on every code. They sit with the ops because the op layer is below the quantization recipes."""
from __future__ import annotations

import torch
from torch import Tensor


def levels(bits: int) -> int:
    """R = 2^(bits-1) - 1: codes lie in [-R, R]."""
    return (1 << (bits - 1)) - 1


def codes_for(w: Tensor, scale: Tensor, bits: int) -> Tensor:
    """Round w / scale (one scale per row) into the symmetric code range."""
    r = levels(bits)
    return torch.clamp(torch.round(w / scale[:, None]), -r, r).to(torch.int8)


def sdclip_scale(w: Tensor, bits: int, clip_sigmas: float) -> Tensor:
    """SDClip: fp16 per-row scales k·std(row)/R (a zero row gets scale 1); the unbiased std, as the record."""
    std = w.float().std(dim=1)
    scale = clip_sigmas * std / levels(bits)
    return torch.where(scale > 0, scale, torch.ones_like(scale)).to(torch.float16)
