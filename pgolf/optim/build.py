"""Parameter groups and optimizers (spec §4.2, extended to every model variant).

- Muon: 2-D matrices that are not embeddings or control parameters (block matrices, the
  BigramHash projection), banked by shape
- Adam (AdamW: decoupled decay `adam_wd`, default 0): the token embeddings (tok_emb, the BigramHash table), the untied head, and every
  control / low-dim / conv parameter plus the skip weights
Every parameter lands in exactly one group. Each param group records its `base_lr`; the
trainer scales all of them by the schedule.
"""
from __future__ import annotations

import torch

from pgolf.config import OptimConfig
from pgolf.model.gpt import GPT, is_control
from pgolf.optim.muon import Muon

EMBEDDING_PARAMS = ("tok_emb.weight", "bigram.table.weight")


def build_optimizers(model: GPT, cfg: OptimConfig) -> tuple[list[torch.optim.Optimizer], Muon]:
    embeddings, matrices, scalars = [], [], []
    for name, p in model.named_parameters():
        if name in EMBEDDING_PARAMS:
            embeddings.append(p)
        elif name == "lm_head.weight" or (name == "skip_weights" and not p.numel()):
            continue
        elif p.ndim == 2 and not is_control(name):
            matrices.append(p)
        else:
            scalars.append(p)
    fused = model.tok_emb.weight.is_cuda

    def adam(params, lr):
        return torch.optim.AdamW([{"params": params, "lr": lr, "base_lr": lr}], betas=(cfg.beta1, cfg.beta2),
                                 eps=cfg.adam_eps, weight_decay=cfg.adam_wd, fused=fused)

    token_lr = cfg.tied_embed_lr if model.lm_head is None else cfg.embed_lr
    muon = Muon(matrices, lr=cfg.matrix_lr, momentum=cfg.muon_momentum, backend_steps=cfg.muon_backend_steps,
                coefficients=cfg.muon_coefficients, norm_scale=cfg.muon_norm_scale,
                row_normalize=cfg.muon_row_normalize, weight_decay=cfg.muon_wd, sharded=cfg.muon_sharded)
    for group in muon.param_groups:
        group["base_lr"] = cfg.matrix_lr
    optimizers = [adam(embeddings, token_lr), muon, adam(scalars, cfg.scalar_lr)]
    if model.lm_head is not None:
        optimizers.insert(1, adam([model.lm_head.weight], cfg.head_lr))
    return optimizers, muon
