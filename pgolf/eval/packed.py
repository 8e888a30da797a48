"""Run a model straight from an artifact's packed int6 weights (`pgolf eval --packed`).

Every int6 matrix of the artifact that belongs to a linear layer is swapped in as a
PackedLinear: the weight stays as 0.75-byte codes plus row scales and each forward calls
`pgolf::int6_matmul` (plus the rank-r LQER term when the tensor has one, and a dense term for
its AWQ-lite column groups, whose int6 codes are 0). Everything else
is dequantized as usual.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pgolf.model.layers import CastedLinear
from pgolf.ops.int6_matmul import int6_matmul
from pgolf.quant.encoding import Encoded
from pgolf.quant.lqer import lqer_factors
from pgolf.quant.packing import pack


class PackedLinear(nn.Module):
    frozen_codes = True  # its weights are int6 code buffers: nothing can train them (TTT refuses such a model)

    def __init__(self, e: Encoded, device: torch.device):
        super().__init__()
        rows, self.k = e.shape
        self.register_buffer("packed", torch.from_numpy(pack(e.parts["q"], 6)).to(device))
        self.register_buffer("scales", torch.from_numpy(e.parts["scale"].astype("float32")).to(device))
        self.lqer = e.has_lqer
        if self.lqer:
            a, b = lqer_factors(e.parts, self.k)
            self.register_buffer("lqer_a", a.to(device))
            self.register_buffer("lqer_b", b.to(device))
        self.awq = e.has_awq
        if self.awq:
            starts, q = e.parts["awq_start"].astype("int64").tolist(), e.parts["awq_q"]
            g = q.shape[1] // len(starts)
            cols = torch.cat([torch.arange(s, s + g) for s in starts])
            hi = torch.from_numpy(q.astype("float32")) * torch.from_numpy(e.parts["awq_scale"].astype("float32"))[:, None]
            self.register_buffer("awq_cols", cols.to(device))
            self.register_buffer("awq_w", hi.to(device))

    def forward(self, x: Tensor) -> Tensor:
        y = int6_matmul(x, self.packed, self.scales, self.k)  # fp32 scales: no rounding to bf16
        if self.lqer:
            y = y + (x @ self.lqer_b.to(x.dtype).T) @ self.lqer_a.to(x.dtype).T
        if self.awq:
            y = y + x[..., self.awq_cols] @ self.awq_w.to(x.dtype).T
        return y


def swap_in_packed_layers(model: nn.Module, tensors: dict[str, Encoded]) -> int:
    """Replace the linear layers whose artifact weights are int6 codes; returns how many."""
    swapped = 0
    modules = dict(model.named_modules())
    for name, e in tensors.items():
        path = name.removesuffix(".weight")
        if e.scheme != "int_row" or e.bits != 6 or not isinstance(modules.get(path), CastedLinear):
            continue
        parent_path, _, child = path.rpartition(".")
        parent = modules[parent_path] if parent_path else model
        setattr(parent, child, PackedLinear(e, next(model.parameters()).device))
        swapped += 1
    return swapped
