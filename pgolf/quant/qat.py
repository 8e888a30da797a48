"""Late QAT: which linear layers train against their export codes, and with which SDClip k.

A layer qualifies by its weight's role (`Role.qat`: a matrix) and by being coded at export
(over the fp16 passthrough size: GDN's small a/b projections must not train against int6 noise);
its clip sigmas are its role's class, as export will use them.
"""
from __future__ import annotations

from torch import nn

from pgolf.config import ExportConfig
from pgolf.model.layers import CastedLinear
from pgolf.model.roles import roles_by_module
from pgolf.quant.recipe import clip_sigmas, is_coded


def qat_layers(model: nn.Module, cfg: ExportConfig | None = None) -> dict[str, tuple[CastedLinear, float | None]]:
    """{module name: (layer, clip sigmas)} of the layers late QAT switches (sigmas None without `cfg`)."""
    return {path: (module, clip_sigmas(cfg, role) if cfg else None)
            for path, module, attr, role in roles_by_module(model)
            if role.qat and attr == "weight" and isinstance(module, CastedLinear) and is_coded(role, module.weight)}


def enable_late_qat(model: nn.Module, cfg: ExportConfig) -> int:
    """Switch those layers' forwards to int6 fake-quant; returns how many."""
    layers = qat_layers(model, cfg)
    for module, sigmas in layers.values():
        module.qat_clip_sigmas = sigmas
    return len(layers)


def disable_late_qat(model: nn.Module) -> int:
    """Switch those layers back to their plain forwards (after the trainer's priming steps compiled
    the QAT graph); returns how many."""
    layers = qat_layers(model)
    for module, _ in layers.values():
        module.qat_clip_sigmas = None
    return len(layers)
