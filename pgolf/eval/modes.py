"""Eval modes: the ways `pgolf eval` and the trainer's final score can score the val stream.

`eval.mode` names one; each is a function of an `EvalContext` returning an `EvalOutcome`.
Every mode scores through the canonical accumulator (`ValSet.accumulator`), so coverage (C4:
every target 1..N-1 exactly once) is checked by `result()` whatever the mode. A mode that
adapts (TTT) also returns its score ledger, which makes C3 a checkable fact (pgolf check).

- windows: the flat stream in fixed windows, non-overlapping or sliding (eval.stride)
- lora_ttt: score-first per-document LoRA TTT with global SGD phases (pgolf.eval.ttt)
- sliding_ttt: sliding windows, then score-first SGD on each scored chunk (pgolf.eval.ttt)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from pgolf.config import EvalConfig
from pgolf.distributed import DistEnv
from pgolf.eval.evaluator import evaluate
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
    seconds: dict[str, float] = field(default_factory=dict)  # time by part, for the eval clock


EvalMode = Callable[[EvalContext], EvalOutcome]


def windows_mode(ctx: EvalContext) -> EvalOutcome:
    windows = max(1, ctx.cfg.batch_tokens // (ctx.env.world * ctx.seq_len))
    return EvalOutcome(evaluate(ctx.model, ctx.val, ctx.seq_len, ctx.cfg.stride, windows, ctx.env.rank, ctx.env.world))


def lora_ttt_mode(ctx: EvalContext) -> EvalOutcome:
    """Score-first per-document LoRA TTT with global SGD phases (pgolf.eval.ttt.engine)."""
    from pgolf.eval.ttt.engine import run_lora_ttt
    from pgolf.eval.ttt.phases import global_step_for

    ttt = ctx.cfg.ttt
    report = run_lora_ttt(ctx.model, ctx.val, ttt, ctx.env, global_step=global_step_for(ttt))
    return EvalOutcome(report.result, report.ledger, report.seconds)


def eval_mode(name: str) -> EvalMode:
    """The function for `eval.mode`; TTT modes are imported only when chosen."""
    if name == "windows":
        return windows_mode
    if name == "lora_ttt":
        return lora_ttt_mode
    raise NotImplementedError(f"eval.mode={name!r} is not available in this build")


def run_eval(ctx: EvalContext) -> EvalOutcome:
    return eval_mode(ctx.cfg.mode)(ctx)
