"""Weight initialisation schemes, applied once after the model is built (model.init).

- baseline: what the constructors already did (spec §4.1: PyTorch's default for the linear
  layers, zero output projections, N(0, 0.005) tied embedding); nothing more happens.
- record: the 1.0611 record's (spec §5.2): Q, K, V and MLP-up orthogonal (gain 1), the
  attention and MLP output projections zero, so every block starts as the identity map.
  Like the record, the orthogonal draws come after construction, layer by layer in module
  order (attention's Q, K, V, then the MLP's up-projection).

The scheme names which of a module's own linear layers start orthogonal and which zero, per
module type; every other parameter keeps its constructor's init (gates, scales and mixes
already start as §5.2 says). GatedDeltaNet mixers keep theirs (the record has none).
"""
from __future__ import annotations

import torch
from torch import nn

from pgolf.model.attention import CausalSelfAttention
from pgolf.model.mlp import ReluSquaredMLP

# module type -> (its linear layers drawn orthogonal, its linear layers set to zero)
_RECORD = {CausalSelfAttention: (("c_q", "c_k", "c_v"), ("proj",)), ReluSquaredMLP: (("fc",), ("proj",))}


@torch.no_grad()
def record_init(model: nn.Module) -> None:
    for module in model.modules():
        for kind, (orthogonal, zero) in _RECORD.items():
            if isinstance(module, kind):
                for name in orthogonal:
                    nn.init.orthogonal_(getattr(module, name).weight, gain=1.0)
                for name in zero:
                    nn.init.zeros_(getattr(module, name).weight)


INITS = {"baseline": lambda model: None, "record": record_init}


def apply_init(model: nn.Module, scheme: str) -> None:
    """Re-initialise `model` as `scheme` (model.init, validated by pgolf.config) says."""
    INITS[scheme](model)
