"""AWQ-lite (frontier F7.1, PR #1908): which column groups GPTQ codes at a wider width.

Saliency of input column c of a matrix W with input Hessian H = E[xᵀx]: s_c = rms_c · mean_r |W[r, c]|,
where rms_c = sqrt(E[x_c²]) = sqrt(H[c, c]) is the activation statistic of the same calibration pass
(no second collection). Columns form groups of `group_size` consecutive columns in their original
order (whole groups only); a group scores Σ s_c. The `top_k` best groups over all candidate tensors
together are protected (in the records one 64-column group of `tok_emb`). The candidates are
the coded tensors below the protected width that have a Hessian.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


def group_scores(w: Tensor, hessian: Tensor, group_size: int) -> Tensor:
    """Saliency of each whole group of `group_size` columns of `w` [rows, cols] ([cols // group_size])."""
    rms = torch.sqrt(torch.clamp(torch.diagonal(hessian.double()), min=0.0)).to(w.device)
    saliency = rms * w.double().abs().mean(dim=0)
    n = w.shape[1] // group_size
    return saliency[: n * group_size].reshape(n, group_size).sum(dim=1)


def select_groups(weights: Mapping[str, Tensor], hessians: Mapping[str, Tensor], group_size: int,
                  top_k: int) -> dict[str, list[int]]:
    """{tensor: sorted start columns} of the `top_k` most salient groups over all `weights` (each with
    its Hessian). Ties go to the earlier tensor and group, so the choice is deterministic."""
    ranked = []
    for order, name in enumerate(weights):
        scores = group_scores(weights[name], hessians[name], group_size)
        ranked += [(-float(v), order, g, name) for g, v in enumerate(scores.tolist())]
    chosen: dict[str, list[int]] = {}
    for _, _, g, name in sorted(ranked)[:top_k]:
        chosen.setdefault(name, []).append(g * group_size)
    return {name: sorted(starts) for name, starts in chosen.items()}


def column_mask(cols: int, starts: list[int], group_size: int) -> Tensor:
    mask = torch.zeros(cols, dtype=torch.bool)
    for start in starts:
        mask[start:start + group_size] = True
    return mask
