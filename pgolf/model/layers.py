"""Small building blocks shared by the model variants."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.model.roles import Role, declare


def rms_norm(x: Tensor) -> Tensor:
    """RMSNorm over the last dimension, without a learned weight (as every record uses)."""
    return F.rms_norm(x, (x.size(-1),))


class CastedLinear(nn.Linear):
    """A bias-free linear layer whose weight stays fp32 (for the optimizer) and is cast
    to the activation dtype at matmul time (bf16 compute under autocast).

    With `qat_clip_sigmas` set, the forward sees the weight quantized to int6 (per-row
    SDClip scales) through the int6 kernel, and the backward passes straight through:
    quantization-aware training. torch.compile guards on the attribute, so switching it
    on mid-run recompiles instead of being constant-folded away.

    `role` is the weight's parameter role (pgolf.model.roles), required: the owner says what it is.
    """

    def __init__(self, in_features: int, out_features: int, zero_init: bool = False, *, role: Role):
        super().__init__(in_features, out_features, bias=False)
        declare(self, weight=role)
        self.zero_init = zero_init
        self.qat_clip_sigmas: float | None = None
        if zero_init:
            nn.init.zeros_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        if self.qat_clip_sigmas is not None:
            from pgolf.ops.int6_matmul import int6_qat_linear

            return int6_qat_linear(x, self.weight, self.qat_clip_sigmas)
        return F.linear(x, self.weight.to(x.dtype))


class Rotary(nn.Module):
    """RoPE tables (rotate-half convention), cached per length, for the first `rope_dims` of
    each head (partial RoPE, spec §5.3: rope_dims/2 frequencies spanning base^0..base^-1 over
    those dims; the rest of the head passes through). rope_dims 0: the whole head.

    The tables are built in fp32 and hold no buffer, so casting the model to bf16 cannot
    round them. (The reference baseline keeps inv_freq as a buffer that its .bfloat16()
    call rounds, and builds positions in bf16, so positions above 256 collide there.)
    """

    def __init__(self, head_dim: int, base: float, rope_dims: int = 0):
        super().__init__()
        self.head_dim, self.base = head_dim, base
        self.rope_dims = rope_dims or head_dim
        self._cache: tuple[int, torch.device, Tensor, Tensor] | None = None

    def forward(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        if torch.compiler.is_compiling():
            # In the graph, where they cost nothing: a compiled graph that read the cache would guard
            # on its length and recompile whenever another length (eval, a seq schedule stage) ran.
            cos, sin = self._tables(seq_len, device)
            return cos.to(dtype), sin.to(dtype)
        if self._cache is None or self._cache[0] != seq_len or self._cache[1] != device:
            self._cache = (seq_len, device, *self._tables(seq_len, device))
        return self._cache[2].to(dtype), self._cache[3].to(dtype)

    def _tables(self, seq_len: int, device: torch.device) -> tuple[Tensor, Tensor]:
        rd = self.rope_dims
        inv_freq = 1.0 / (self.base ** (torch.arange(0, rd, 2, dtype=torch.float32, device=device) / rd))
        freqs = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
        return freqs.cos()[None, None], freqs.sin()[None, None]


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first 2 * cos.size(-1) dims of x (halves paired), pass the rest through."""
    rd = 2 * cos.size(-1)
    if rd < x.size(-1):  # partial RoPE
        return torch.cat((apply_rotary(x[..., :rd], cos, sin), x[..., rd:]), dim=-1)
    half = rd // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)
