"""eval.mode=sliding_ttt: sliding-window scoring with score-first SGD per chunk (challenge-spec
§5.14, "Alternative TTT"; the 04-09 record).

The stream's targets 1..N-1 are cut into chunks of `sliding_chunk_tokens`. For each chunk in
order:

1. score: the sliding windows (eval.stride, window ctx.seq_len) of the whole stream's plan
   that reach into the chunk score the chunk's targets, and only those (a window straddling
   two chunks runs once for each, with the weights of that moment), through the canonical
   accumulator: every target is scored exactly once (C4, checked by `result()`);
2. train, unless it is the last chunk: `sliding_epochs` epochs of SGD (momentum, clip, cosine
   LR over the chunks, momentum kept across chunks) on the chunk's tokens, all parameters,
   rows of ctx.seq_len split across the ranks with all-reduced gradients (pgolf.eval.ttt.global_sgd).

The ranks score disjoint shares of a chunk's windows; the first all-reduce of the chunk's
training orders every rank's scoring before the update, so each replica's ledger records the
chunk's whole plan as scored and then the updates with the positions they read (C3).
The model is restored to its incoming weights at the end.
"""
from __future__ import annotations

import time

import torch

from pgolf.distributed import DistEnv
from pgolf.eval.evaluator import autocast_for
from pgolf.eval.modes import EvalContext, EvalOutcome
from pgolf.eval.ttt.global_sgd import (GlobalSGDSettings, cosine_lr, plan_rows, sgd_epochs, span_positions,
                                       trainable)
from pgolf.eval.windows import Windows, plan_windows
from pgolf.metric.bpb import BPBAccumulator
from pgolf.metric.ledger import ScoreLedger
from pgolf.metric.valset import ValSet


def chunk_bounds(n_tokens: int, chunk_tokens: int) -> list[tuple[int, int]]:
    """Target ranges [a, b) covering 1..n_tokens-1 in order."""
    return [(a, min(a + chunk_tokens, n_tokens)) for a in range(1, n_tokens, chunk_tokens)]


def settings_for(ctx: EvalContext) -> GlobalSGDSettings:
    """The per-chunk SGD; rows per rank per step come from eval.ttt.global_batch_seqs."""
    t = ctx.cfg.ttt
    return GlobalSGDSettings(lr=t.sliding_lr, momentum=t.sliding_momentum, epochs=t.sliding_epochs,
                             chunk_tokens=t.sliding_chunk_tokens, batch_seqs=t.global_batch_seqs,
                             grad_clip=t.sliding_grad_clip, seq_len=ctx.seq_len)


def _chunk_windows(plan: Windows, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(starts, first target each scores here) of the windows whose scored targets meet [a, b)."""
    last = plan.starts + plan.seq_len  # each window's last target
    lo = int(torch.searchsorted(last, a))
    hi = int(torch.searchsorted(plan.first_scored, b))
    return plan.starts[lo:hi], plan.first_scored[lo:hi].clamp(min=a)


def _kept(starts: torch.Tensor, first: torch.Tensor, b: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    targets = starts[:, None] + 1 + torch.arange(seq_len, device=starts.device)
    return targets, (targets >= first[:, None]) & (targets < b)


@torch.no_grad()
def score_chunk(model, val: ValSet, plan: Windows, a: int, b: int, acc: BPBAccumulator, ledger: ScoreLedger,
                windows_per_batch: int, env: DistEnv) -> None:
    """Score targets [a, b) with this rank's share of the chunk's windows (fixed-size batches,
    the last padded with unscored repeats); the ledger gets the chunk's whole plan."""
    starts, first = _chunk_windows(plan, a, b)
    n = starts.numel()
    lo, hi = n * env.rank // env.world, n * (env.rank + 1) // env.world
    per_batch = max(1, min(windows_per_batch, -(-n // env.world)))
    device = val.tokens.device
    model.eval()
    for i in range(lo, hi, per_batch):
        s, f = starts[i:min(i + per_batch, hi)], first[i:min(i + per_batch, hi)]
        real = s.numel()
        pad = per_batch - real
        s, f = torch.cat([s, s[-1:].expand(pad)]).to(device), torch.cat([f, f[-1:].expand(pad)]).to(device)
        targets, keep = _kept(s, f, b, plan.seq_len)
        keep[real:] = False
        with autocast_for(device):
            nll = model(val.tokens[targets - 1].long(), val.tokens[targets].long(), reduction="none")
        acc.add(nll.view(targets.shape).float(), targets, mask=keep)
    targets, keep = _kept(starts, first, b, plan.seq_len)
    ledger.scored(targets[keep])


def train_chunk(model, tokens: torch.Tensor, a: int, b: int, opt: torch.optim.Optimizer, params: list,
                settings: GlobalSGDSettings, ledger: ScoreLedger, env: DistEnv) -> int:
    """The chunk's SGD epochs on inputs a-1..b-2 (targets a..b-1); returns the steps taken."""
    positions, starts = span_positions([(a - 1, b - 1)], tokens.numel())
    rows = plan_rows(positions, starts, settings.seq_len, pack=True)
    model.train()
    return sgd_epochs(model, tokens, rows, opt, params, settings, ledger, env)


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def sliding_ttt_mode(ctx: EvalContext) -> EvalOutcome:
    model, val, env = ctx.model, ctx.val, ctx.env
    settings = settings_for(ctx)
    plan = plan_windows(len(val), ctx.seq_len, ctx.cfg.stride)
    chunks = chunk_bounds(len(val), settings.chunk_tokens)
    windows_per_batch = max(1, ctx.cfg.batch_tokens // (env.world * plan.seq_len))
    acc, ledger = val.accumulator(), ScoreLedger(len(val))
    seconds = {"scoring": 0.0, "ttt": 0.0}
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        with trainable(model) as params:
            opt = torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum)
            for c, (a, b) in enumerate(chunks):
                t0 = _clock(val.tokens.device)
                score_chunk(model, val, plan, a, b, acc, ledger, windows_per_batch, env)
                t1 = _clock(val.tokens.device)
                seconds["scoring"] += t1 - t0
                if c < len(chunks) - 1:
                    for group in opt.param_groups:
                        group["lr"] = cosine_lr(settings.lr, c, len(chunks) - 1)
                    train_chunk(model, val.tokens, a, b, opt, params, settings, ledger, env)
                    seconds["ttt"] += _clock(val.tokens.device) - t1
    finally:
        model.load_state_dict(saved)
    return EvalOutcome(acc.result(), ledger, seconds)
