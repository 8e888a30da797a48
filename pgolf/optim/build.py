"""Parameter groups and optimizers (spec §4.2, extended to every model variant), by parameter role
(pgolf.model.roles, `Role.optimizer`):

- Muon: the matrices (block matrices, the BigramHash projection), banked by shape
- Adam (AdamW, decoupled decay p <- p·(1 − lr·wd) at the scheduled lr): the embedding tables
  (token embedding, n-gram table) at the embedding lr with `embed_wd` (the records: 0.085), the
  untied head at the head lr and every control, gate, conv and norm parameter at the scalar lr,
  both with `adam_wd` (the records: 0.02; spec §5.8)
Every parameter lands in exactly one group (an empty one, like skip_weights without U-Net
skips, in none). Each param group records its `base_lr`; the trainer scales all of them by the schedule.
"""
from __future__ import annotations

import torch

from pgolf.config import OptimConfig
from pgolf.model.gpt import GPT
from pgolf.model.roles import param_roles
from pgolf.optim.muon import Muon


def param_groups(model: GPT) -> dict[str, list[torch.nn.Parameter]]:
    """Parameters by optimizer group (muon, embed, head, scalar), in model order."""
    roles = param_roles(model)
    groups: dict[str, list[torch.nn.Parameter]] = {"embed": [], "head": [], "muon": [], "scalar": []}
    for name, p in model.named_parameters():
        if p.numel():
            groups[roles[name].optimizer].append(p)
    return groups


def build_optimizers(model: GPT, cfg: OptimConfig) -> tuple[list[torch.optim.Optimizer], Muon]:
    groups = param_groups(model)
    fused = next(model.parameters()).is_cuda

    def adam(params, lr, wd):
        return torch.optim.AdamW([{"params": params, "lr": lr, "base_lr": lr}], betas=(cfg.beta1, cfg.beta2),
                                 eps=cfg.adam_eps, weight_decay=wd, fused=fused)

    token_lr = cfg.embed_lr if groups["head"] else cfg.tied_embed_lr
    muon = Muon(groups["muon"], lr=cfg.matrix_lr, momentum=cfg.muon_momentum, backend_steps=cfg.muon_backend_steps,
                coefficients=cfg.muon_coefficients, norm_scale=cfg.muon_norm_scale,
                row_normalize=cfg.muon_row_normalize, weight_decay=cfg.muon_wd, sharded=cfg.muon_sharded)
    for group in muon.param_groups:
        group["base_lr"] = cfg.matrix_lr
    optimizers = [adam(groups["embed"], token_lr, cfg.embed_wd), muon,
                  adam(groups["scalar"], cfg.scalar_lr, cfg.adam_wd)]
    if groups["head"]:
        optimizers.insert(1, adam(groups["head"], cfg.head_lr, cfg.adam_wd))
    return optimizers, muon
