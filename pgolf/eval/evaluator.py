"""Score a model on the val stream through the canonical accumulator, across ranks."""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
from torch import nn

from pgolf.eval.tilt import NO_TILT
from pgolf.eval.windows import Windows, plan_windows
from pgolf.metric.bpb import BPBResult
from pgolf.metric.valset import ValSet

if TYPE_CHECKING:
    from pgolf.eval.tilt import ScoreTilt


def autocast_for(device: torch.device):
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, val: ValSet, seq_len: int, stride: int = 0, windows_per_batch: int = 32,
             rank: int = 0, world: int = 1, tilt: ScoreTilt = NO_TILT, plan: Windows | None = None) -> BPBResult:
    """val_loss/val_bpb of `model` (called as model(x, y, reduction="none")) on `val`.

    Each rank runs its share of the windows in fixed-size batches (the last one padded
    with masked-out repeats, so a compiled model sees one shape); `result()` all-reduces
    and checks that every target was scored exactly once. A batch never holds more windows
    than the largest rank share: a val set smaller than one batch is not padded up to it.
    `tilt` turns each forward into the score (pgolf.eval.tilt: the n-gram tilt, or the plain
    NLL); `plan` replaces the flat stream's windows (e.g. the document-isolated ones).
    """
    device = val.tokens.device
    plan = plan_windows(len(val), seq_len, stride) if plan is None else plan
    windows_per_batch = max(1, min(windows_per_batch, -(-len(plan) // world)))
    mine = plan.shard(rank, world)
    acc = val.accumulator()
    offsets = torch.arange(mine.seq_len, device=device)
    was_training = model.training
    model.eval()
    try:
        for lo in range(0, len(mine), windows_per_batch):
            starts = mine.starts[lo:lo + windows_per_batch].to(device)
            first = mine.first_scored[lo:lo + windows_per_batch].to(device)
            real = starts.numel()
            if real < windows_per_batch:  # pad with the last window; its copies are not scored
                starts = torch.cat([starts, starts[-1:].expand(windows_per_batch - real)])
                first = torch.cat([first, first[-1:].expand(windows_per_batch - real)])
            idx = starts[:, None] + offsets  # [W, L] input positions
            keep = idx + 1 >= first[:, None]
            if mine.lengths is not None:  # short windows: the padding past their length is run, not scored
                lengths = mine.lengths[lo:lo + windows_per_batch].to(device)
                keep &= offsets < torch.cat([lengths, lengths[-1:].expand(windows_per_batch - real)])[:, None]
                idx = idx.clamp_max(len(val) - 2)
            x, y = val.tokens[idx].long(), val.tokens[idx + 1].long()
            with autocast_for(device):
                nll = tilt.forward_score(model, x, y, idx + 1).view(idx.shape).float()
            keep[real:] = False
            acc.add(nll, idx + 1, mask=keep)  # targets are tokens[idx + 1] by construction
    finally:
        model.train(was_training)
    return acc.result()
