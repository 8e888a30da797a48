"""Eval modes: the ways `pgolf eval` and the trainer's final score can score the val stream.

`eval.mode` names one; each is a function of an `EvalContext` returning an `EvalOutcome`.
Every mode scores through the canonical accumulator (`ValSet.accumulator`), so coverage (C4:
every target 1..N-1 exactly once) is checked by `result()` whatever the mode. A mode that
adapts (TTT) also returns its score ledger, which makes C3 a checkable fact (pgolf check).

- windows: the flat stream in fixed windows, non-overlapping or sliding (eval.stride), or each
  document on its own (eval.doc_isolated); tilted by the n-gram hints with eval.ngram.enabled
- lora_ttt: score-first per-document LoRA TTT with global SGD phases (pgolf.eval.ttt)
- sliding_ttt: sliding windows, then score-first SGD on each scored chunk (pgolf.eval.ttt)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn

from pgolf.config import EvalConfig
from pgolf.distributed import DistEnv
from pgolf.errors import PgolfError
from pgolf.eval.evaluator import evaluate
from pgolf.eval.tilt import NO_TILT, build_tilt
from pgolf.eval.windows import plan_doc_windows
from pgolf.metric.bpb import BPBResult
from pgolf.metric.ledger import ScoreLedger
from pgolf.metric.valset import ValSet


@dataclass
class EvalContext:
    model: nn.Module  # the model built from the artifact alone
    val: ValSet  # on the model's device
    cfg: EvalConfig  # the run's eval section (with any command-line overrides applied)
    seq_len: int  # the window length, resolved (eval.seq_len, else the training one, fitted to the stream)
    env: DistEnv


@dataclass
class EvalOutcome:
    result: BPBResult
    ledger: ScoreLedger | None = None  # adaptive modes: what was scored before which update
    # Time by part, for the eval clock (pgolf.eval.clock): the 8×H100 projection divides the parts named in
    # clock.SCALING_PARTS ("scoring", "ttt", "global_sgd") over the ranks and keeps every other one
    # ("ngram_precompute", "compile_warmup", ...) as measured; what a mode leaves unnamed is "mode_other".
    seconds: dict[str, float] = field(default_factory=dict)
    details: dict[str, float] = field(default_factory=dict)  # what the mode reports beyond the score


EvalMode = Callable[[EvalContext], EvalOutcome]


def windows_mode(ctx: EvalContext) -> EvalOutcome:
    """Flat-stream windows (or, with eval.doc_isolated, each document's own); scored in stream
    order, so the n-gram state (eval.ngram) is built in file order."""
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    tilt = build_tilt(ctx.cfg.ngram, ctx.val, ctx.model.cfg.vocab_size, ctx.env)
    if tilt.enabled:
        seconds["ngram_precompute"] = time.perf_counter() - t
    plan = plan_doc_windows(ctx.val.tokens, ctx.val.bos_id, ctx.seq_len, ctx.cfg.stride) if ctx.cfg.doc_isolated else None
    windows = max(1, ctx.cfg.batch_tokens // (ctx.env.world * ctx.seq_len))
    t = time.perf_counter()
    result = evaluate(ctx.model, ctx.val, ctx.seq_len, ctx.cfg.stride, windows, ctx.env.rank, ctx.env.world,
                      tilt=tilt, plan=plan)
    seconds["scoring"] = time.perf_counter() - t  # result() all-reduces: the device has finished
    return EvalOutcome(result, seconds=seconds)


def lora_ttt_mode(ctx: EvalContext) -> EvalOutcome:
    """Score-first per-document LoRA TTT with global SGD phases (pgolf.eval.ttt.engine). With
    eval.ngram the tilt's state is built in the engine's queue order, the order it scores in
    (frontier-spec F1.7), and tilts the score only."""
    from pgolf.eval.ttt.documents import queue_document_indices
    from pgolf.eval.ttt.engine import run_lora_ttt
    from pgolf.eval.ttt.phases import global_step_for

    ttt, seconds = ctx.cfg.ttt, {}
    tilt = NO_TILT
    if ctx.cfg.ngram.enabled:
        t = time.perf_counter()
        tilt = build_tilt(ctx.cfg.ngram, ctx.val, ctx.model.cfg.vocab_size, ctx.env,
                          order=queue_document_indices(ctx.val, ttt))
        seconds["ngram_precompute"] = time.perf_counter() - t
    report = run_lora_ttt(ctx.model, ctx.val, ttt, ctx.env, global_step=global_step_for(ttt),
                          score_transform=tilt.score_transform if tilt.enabled else None)
    details = {"bos_targets": report.bos_targets, "bos_loss_sum": report.bos_loss_sum,
               "records_comparable_bpb": report.records_comparable_bpb, "lora_updates": report.updates,
               "global_sgd_steps": sum(report.phase_steps)}
    return EvalOutcome(report.result, report.ledger, {**seconds, **report.seconds}, details)


def eval_mode(name: str) -> EvalMode:
    """The function for `eval.mode`; TTT modes are imported only when chosen."""
    if name == "windows":
        return windows_mode
    if name == "sliding_ttt":
        from pgolf.eval.ttt.sliding import sliding_ttt_mode

        return sliding_ttt_mode
    if name == "lora_ttt":
        return lora_ttt_mode
    raise PgolfError(f"eval.mode={name!r} is not an eval mode (windows, lora_ttt, sliding_ttt)")


def ledger_path(path: str | Path, rank: int) -> Path:
    """Where rank `rank` keeps its ledger (each replica has its own C3 record): PATH on rank 0,
    PATH with `.rank<r>` before the suffix on the others."""
    path = Path(path)
    return path if rank == 0 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def save_ledger(ledger: ScoreLedger | None, path: str | Path, env: DistEnv) -> Path | None:
    """Each rank writes its adaptive mode's ledger (none for a mode that does not adapt)."""
    if ledger is None:
        return None
    target = ledger_path(path, env.rank)
    ledger.save(target)
    return target


def run_eval(ctx: EvalContext) -> EvalOutcome:
    return eval_mode(ctx.cfg.mode)(ctx)
