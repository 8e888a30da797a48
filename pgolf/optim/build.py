"""Parameter groups and optimizers for the baseline (spec §4.2).

- Muon: 2-D matrices inside the blocks (not control parameters), banked by shape
- Adam: the token embedding (tied or not), the untied head, and every control/low-dim
  parameter plus the skip weights
Each param group records its `base_lr`; the trainer scales all of them by the schedule.
"""
from __future__ import annotations

import torch

from pgolf.config import OptimConfig
from pgolf.model.gpt import GPT, is_control
from pgolf.optim.muon import Muon


def build_optimizers(model: GPT, cfg: OptimConfig) -> tuple[list[torch.optim.Optimizer], Muon]:
    matrices, scalars = [], []
    for name, p in model.blocks.named_parameters():
        (matrices if p.ndim == 2 and not is_control(name) else scalars).append(p)
    if model.skip_weights.numel():
        scalars.append(model.skip_weights)
    fused = model.tok_emb.weight.is_cuda

    def adam(params, lr):
        return torch.optim.Adam([{"params": params, "lr": lr, "base_lr": lr}], betas=(cfg.beta1, cfg.beta2),
                                eps=cfg.adam_eps, fused=fused)

    token_lr = cfg.tied_embed_lr if model.lm_head is None else cfg.embed_lr
    muon = Muon(matrices, lr=cfg.matrix_lr, momentum=cfg.muon_momentum, backend_steps=cfg.muon_backend_steps,
                coefficients=cfg.muon_coefficients, norm_scale=cfg.muon_norm_scale,
                row_normalize=cfg.muon_row_normalize, weight_decay=cfg.muon_wd, sharded=cfg.muon_sharded)
    for group in muon.param_groups:
        group["base_lr"] = cfg.matrix_lr
    optimizers = [adam([model.tok_emb.weight], token_lr), muon, adam(scalars, cfg.scalar_lr)]
    if model.lm_head is not None:
        optimizers.insert(1, adam([model.lm_head.weight], cfg.head_lr))
    return optimizers, muon
