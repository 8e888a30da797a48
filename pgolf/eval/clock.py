"""The honest eval clock (issue 15.5): every part of an evaluation timed, the total reported, and a
warning when the total, projected to the challenge's 8×H100, would pass eval.budget_seconds.

Parts, in the order `pgolf eval` runs them: artifact_read (file read, checksums, decompression),
model_build (the model from the artifact's config, its tensors dequantized and loaded), val_load
(the tokenizer, the val stream and its bytes; the trainer's final score holds them from the start,
so it has no such part), then the mode's own parts (EvalOutcome.seconds: ngram_precompute,
scoring, and whatever a TTT mode reports; the rest of the mode's span is mode_other). Compilation
and warm-up are a part of a mode that does them: today's windows mode runs the eager model, so
there is none to report (and none left out).

The projection to 8×H100 (`project`) is an assumption, not a measurement, and says so:
- parts that every rank does in parallel or that one rank does for all (reading, building, the
  n-gram precompute, compilation) take as long on 8 ranks as on this run's;
- the parts listed in SCALING_PARTS (scoring, TTT) divide over ranks: their time × world / 8;
- the device: its time × ASSUMED_SPEED_VS_H100 for this device (a ratio of H100 speed to this
  device's). No ratio was measured; an H100 is 1 by definition, any other GPU is *assumed* 1
  (same speed), and a CPU run has no projection at all (a CPU's time says nothing about a GPU's).
"""
from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from typing import Iterator

import torch

from pgolf.eval.modes import EvalContext, run_eval

# Mode parts whose work is divided among the ranks (each rank scores its share).
SCALING_PARTS = ("scoring", "ttt", "global_sgd")
# Device speed relative to an H100 (time on it / time on an H100). Nothing here was measured:
# H100 is the reference (1.0, exact); every other CUDA device is assumed to be as fast.
ASSUMED_SPEED_VS_H100 = 1.0
TARGET_WORLD = 8


@dataclass
class Projection:
    seconds: float  # the projected total on 8×H100
    assumption: str  # how it was projected, in words

    def as_dict(self) -> dict:
        return {"seconds": self.seconds, "assumption": self.assumption}


@dataclass
class EvalClock:
    """Times named parts (synchronising the device around each, so queued GPU work is counted)."""

    device: torch.device
    parts: dict[str, float] = field(default_factory=dict)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        self._sync()
        t = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.add(name, time.perf_counter() - t)

    def add(self, name: str, seconds: float) -> None:
        self.parts[name] = self.parts.get(name, 0.0) + float(seconds)

    def add_parts(self, parts: dict[str, float], within: float) -> None:
        """A mode's own parts (EvalOutcome.seconds), measured inside a span of `within` seconds;
        what the mode did not name is reported as 'mode_other', so the parts add up to the span."""
        for name, seconds in parts.items():
            self.add(name, seconds)
        self.add("mode_other", max(0.0, within - sum(parts.values())))

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def report(self, world: int, budget_seconds: float) -> dict:
        """The JSON the result and the run log carry: every part, the total, the projection."""
        proj = project(self.parts, world, device_name(self.device))
        return {"eval_parts": dict(self.parts), "eval_total_seconds": self.total,
                "eval_projection_8xh100": None if proj is None else proj.as_dict(),
                "within_eval_budget": within_budget(self.total, proj, budget_seconds)}


def device_name(device: torch.device) -> str | None:
    """The GPU's name (torch.cuda.get_device_name); None for a CPU."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else None


def project(parts: dict[str, float], world: int, name: str | None) -> Projection | None:
    """The total on 8×H100 from parts measured on `world` GPUs called `name` (None: a CPU, no
    projection), under the module docstring's stated assumption."""
    if name is None:
        return None
    ratio = 1.0 if "H100" in name else ASSUMED_SPEED_VS_H100
    scaling = sum(s for k, s in parts.items() if k in SCALING_PARTS)
    fixed = sum(s for k, s in parts.items() if k not in SCALING_PARTS)
    seconds = (fixed + scaling * world / TARGET_WORLD) * ratio
    speed = ("an H100" if "H100" in name else
             f"{name}, assumed as fast as an H100 (ratio {ASSUMED_SPEED_VS_H100}, not measured)")
    return Projection(seconds, f"measured on {world} × {speed}; {'+'.join(SCALING_PARTS)} divided over "
                               f"{TARGET_WORLD} ranks (× {world}/{TARGET_WORLD}), every other part unchanged")


def within_budget(total: float, proj: Projection | None, budget_seconds: float) -> bool:
    """The measured total, and the projection when there is one, within the budget (0: none)."""
    if not budget_seconds:
        return True
    return total <= budget_seconds if proj is None else proj.seconds <= budget_seconds


def warn_if_over(report: dict, budget_seconds: float) -> str | None:
    """A RuntimeWarning (and its text) when the projected total passes the budget."""
    proj = report["eval_projection_8xh100"]
    if not budget_seconds or proj is None or proj["seconds"] <= budget_seconds:
        return None
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in report["eval_parts"].items())
    text = (f"eval would take {proj['seconds']:.1f} s on 8×H100, over eval.budget_seconds={budget_seconds:g} "
            f"(projection: {proj['assumption']}; measured here: {parts}; total {report['eval_total_seconds']:.1f} s)")
    warnings.warn(text, RuntimeWarning, stacklevel=2)
    return text


def timed_eval(clock: EvalClock, ctx: EvalContext) -> dict:
    """run_eval with its parts on `clock`: the clock's report (pgolf.eval.clock) plus the "result",
    and a RuntimeWarning when the projected total passes eval.budget_seconds."""
    t = time.perf_counter()
    outcome = run_eval(ctx)
    clock.add_parts(outcome.seconds, time.perf_counter() - t)
    report = clock.report(ctx.env.world, ctx.cfg.budget_seconds)
    if ctx.env.is_main:
        warn_if_over(report, ctx.cfg.budget_seconds)
    return {"result": outcome.result, **report, **({"mode_details": outcome.details} if outcome.details else {}),
            "ledger": outcome.ledger}
