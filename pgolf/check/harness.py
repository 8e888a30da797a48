"""`pgolf check`: run every compliance condition on a model, a val set and an eval mode; print the table.

The model-run conditions (C1, C2, C3, the coverage part of C4) score the first
`n_tokens` of the val stream, as a stream of its own (a mode is a function of the stream
it is given; the perturbation runs repeat it, so it must be short on a CPU). The totals
part of C4 reads the whole val split, and F10 (train/val disjointness) every train shard.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pgolf.check import conditions as c
from pgolf.check.modes import EvalMode
from pgolf.data.overlap import scan_overlap
from pgolf.data.tokenizer import Tokenizer
from pgolf.metric.ledger_audit import load_ledger
from pgolf.metric.valset import ValSet, load_val_set

ValLoader = Callable[[Path, Tokenizer], ValSet]


@dataclass
class CheckPlan:
    data_dir: Path
    tokenizer: Tokenizer
    mode: EvalMode
    n_tokens: int = 4096
    cuts: int = 4
    tolerance: float = 0.0
    val_loader: ValLoader = load_val_set  # how the eval under test loads its val stream
    disjoint: bool = True
    tokens_per_step: int | None = None
    workers: int = 1  # processes for the train shard scan
    ledger: Path | None = None  # a saved ledger of a full eval run, checked for C3 too


def run_checks(model: nn.Module, plan: CheckPlan) -> list[c.Outcome]:
    val = plan.val_loader(plan.data_dir, plan.tokenizer)
    rows = c.check_totals(val.tokens, val.position_bytes, plan.data_dir, plan.tokenizer)
    n = min(plan.n_tokens, len(val))
    tokens, pbytes = val.tokens[:n].cpu(), val.position_bytes[:n].cpu()
    base = c.run_mode(plan.mode, model, tokens)
    rows.append(c.check_coverage(base, n))
    rows.append(c.check_scored_bytes(base, pbytes))
    rows += c.check_c2(base, tokens)
    if getattr(plan.mode, "reorders", False):  # its documents' order is its own: C1 holds in that order or not at all
        rows.append(c.Outcome("C1", "perturb x[>=t] in stream order", True,
                              "not applicable: the mode scores documents in its own (queue) order, in which the "
                              "next row judges C1 (frontier-spec F1.7)"))
    else:
        rows.append(c.check_c1(plan.mode, model, tokens, plan.tokenizer.bos_id, plan.tokenizer.vocab_size, base,
                               cuts=plan.cuts, tolerance=plan.tolerance))
    rows.append(c.check_c1_scoring_order(plan.mode, model, tokens, plan.tokenizer.bos_id, plan.tokenizer.vocab_size,
                                         base, cuts=plan.cuts, tolerance=plan.tolerance))
    rows.append(c.check_c3(base.ledger))
    if plan.ledger is not None:
        saved = c.check_c3(load_ledger(plan.ledger))
        rows.append(c.Outcome("C3", f"{saved.method} ({plan.ledger.name})", saved.passed, saved.detail))
    if plan.disjoint:
        rows.append(check_disjoint(plan.data_dir, plan.tokenizer.bos_id, plan.tokens_per_step, plan.workers))
    return rows


def check_disjoint(data_dir: Path, bos_id: int, tokens_per_step: int | None, workers: int = 1) -> c.Outcome:
    r = scan_overlap(data_dir, bos_id, tokens_per_step, workers=workers)
    return c.Outcome("F10", f"hash of every val document looked up in {r.train_shards} train shards "
                            f"({r.train_tokens:,} tokens, {r.tokens_per_second / 1e6:.1f}M tokens/s)",
                     r.clean, r.summary().split(": ", 1)[-1])


def format_table(rows: list[c.Outcome], mode_name: str, seconds: float) -> str:
    w1 = max(len(r.method) for r in rows)
    lines = [f"pgolf check: mode {mode_name}", f"{'cond':5} {'method':{w1}}  result",
             f"{'-' * 5} {'-' * w1}  {'-' * 6}"]
    lines += [f"{r.condition:5} {r.method:{w1}}  {'PASS' if r.passed else 'FAIL'}: {r.detail}" for r in rows]
    failed = sum(not r.passed for r in rows)
    lines.append(f"{len(rows) - failed}/{len(rows)} passed in {seconds:.1f} s" + (f"; {failed} FAILED" if failed else ""))
    return "\n".join(lines)


def random_weights(model: nn.Module, seed: int = 0, std: float = 0.05) -> nn.Module:
    """Noise on every parameter, so zero-initialised paths (projections, gates, the head) are
    live and any leak through them shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)
    return model


def timed_checks(model: nn.Module, plan: CheckPlan) -> tuple[list[c.Outcome], float]:
    t = time.perf_counter()
    rows = run_checks(model, plan)
    return rows, time.perf_counter() - t
