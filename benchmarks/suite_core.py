"""The GPU suite's machinery: the budget, the parts runner, checks, timing and the two output files.

Nothing here knows about a particular op or preset (those live in suite_ops / suite_train);
gpu_suite.py wires them together.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from harness import median_seconds


# ---------------------------------------------------------------------------------------
# Budget and parts


class Budget:
    """Seconds left of a wall-clock allowance; `clock` is replaceable for tests."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.total, self.clock = float(seconds), clock
        self.start = clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        return self.total - self.elapsed()

    def allows(self, estimate_s: float) -> bool:
        return self.left() >= estimate_s


@dataclass
class Part:
    """One part of the suite: `run(ctx)` fills ctx.results; `estimate_s` is what it needs to start."""
    name: str
    estimate_s: float
    run: Callable[["Context"], None]


@dataclass
class Context:
    """What every part sees: the device, the mode, the budget and the results so far."""
    device: torch.device
    dry_run: bool
    budget: Budget
    results: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def record(self, section: str, row: dict) -> None:
        with self.lock:
            self.results.setdefault(section, []).append(row)
        print(f"[{section}] " + " ".join(f"{k}={_short(v)}" for k, v in row.items()), flush=True)

    def skip(self, section: str, what: str, estimate_s: float) -> None:
        self.record(section, {"item": what, "status": "skipped",
                              "note": f"budget: {self.budget.left():.0f} s left, needs ~{estimate_s:.0f} s"})

    def allows(self, section: str, what: str, estimate_s: float) -> bool:
        """Whether an item inside a part may start; records the skip when not."""
        if self.budget.allows(estimate_s):
            return True
        self.skip(section, what, estimate_s)
        return False


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def run_parts(parts: list[Part], ctx: Context, on_progress: Callable[[], None] = lambda: None) -> None:
    """Run the parts in the given (priority) order; a part whose estimate exceeds what is left is
    skipped with a note, and so is every later part that does not fit. A part that raises is
    recorded as failed and the suite goes on."""
    status = ctx.results.setdefault("parts", [])
    for part in parts:
        if not ctx.budget.allows(part.estimate_s):
            status.append({"part": part.name, "status": "skipped",
                           "note": f"budget: {ctx.budget.left():.0f} s left, needs ~{part.estimate_s:.0f} s"})
            print(f"== {part.name}: skipped ({status[-1]['note']})", flush=True)
            continue
        print(f"== {part.name} ({ctx.budget.left():.0f} s of budget left)", flush=True)
        t0 = ctx.budget.clock()
        entry = {"part": part.name, "status": "running"}
        status.append(entry)
        try:
            part.run(ctx)
            entry["status"] = "done"
        except Exception as e:  # noqa: BLE001 (a broken part must not cost the others)
            entry.update(status="failed", note=f"{type(e).__name__}: {e}"[:500])
            print(f"== {part.name} failed: {entry['note']}", flush=True)
        entry["seconds"] = round(ctx.budget.clock() - t0, 2)
        on_progress()


def start_watchdog(seconds: float, on_expiry: Callable[[], None]) -> threading.Timer:
    """The hard stop: when the budget (plus grace) is gone mid-part, write what exists and exit."""
    def fire():
        on_expiry()
        os._exit(3)
    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


# ---------------------------------------------------------------------------------------
# Correctness checks


@dataclass
class Check:
    """One comparison of a kernel's outputs with the truth.

    `candidate()` and `reference()` each return {output name: tensor}. A check passes when
    every candidate output is finite (poisoned memory that was never written shows up as
    NaN) and its error metric is within `tol[name]` (or `tol["*"]`). Metrics: "rel" =
    ‖out − ref‖ / ‖ref‖; "sv" = the largest gap between singular values (for orthogonalisers).
    """
    op: str
    name: str
    mode: str  # eager | compiled | kernel
    candidate: Callable[[], dict]
    reference: Callable[[], dict]
    tol: dict
    metric: str = "rel"


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double(), ref.detach().double()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def sv_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    s_out = torch.linalg.svdvals(out.detach().double().cpu())
    s_ref = torch.linalg.svdvals(ref.detach().double().cpu())
    return float((s_out - s_ref).abs().max())


METRICS = {"rel": rel_error, "sv": sv_error}


def compare(outputs: dict, refs: dict, tol: dict, metric: str = "rel") -> tuple[bool, dict, str]:
    """(passed, {output: error}, note)."""
    errors, problems = {}, []
    for name, ref in refs.items():
        out = outputs.get(name)
        if out is None:
            problems.append(f"{name}: missing")
            continue
        if out.shape != ref.shape:
            problems.append(f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)}")
            continue
        if not bool(torch.isfinite(out.detach()).all()):
            errors[name] = math.nan
            problems.append(f"{name}: non-finite values (unwritten or overflowed)")
            continue
        err = METRICS[metric](out, ref)
        errors[name] = err
        limit = tol.get(name, tol.get("*"))
        if not err <= limit:
            problems.append(f"{name}: {metric} error {err:.2e} > {limit:.0e}")
    return not problems, errors, "; ".join(problems)


def poison_allocator(device: torch.device, nbytes: int) -> None:
    """Fill free memory of the CUDA caching allocator with 0xFF (NaN in every float dtype), so
    an op's internal output buffers start as NaN and an element the kernel never writes fails
    the finiteness test. A no-op on the CPU (its allocator gives fresh pages back)."""
    if device.type != "cuda":
        return
    big = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(255)
    small = [torch.empty(1 << 19, dtype=torch.uint8, device=device).fill_(255) for _ in range(32)]
    del big, small


def run_check(check: Check, ctx: Context, poison_bytes: int) -> dict:
    try:
        refs = check.reference()
        poison_allocator(ctx.device, poison_bytes)
        outputs = check.candidate()
        passed, errors, note = compare(outputs, refs, check.tol, check.metric)
    except Exception as e:  # noqa: BLE001 (an op that raises fails its check, the suite goes on)
        passed, errors, note = False, {}, f"raised {type(e).__name__}: {e}"[:400]
    row = {"op": check.op, "check": check.name, "mode": check.mode, "metric": check.metric,
           "passed": passed, "errors": {k: float(f"{v:.3e}") for k, v in errors.items()},
           "tol": check.tol}
    if note:
        row["note"] = note
    return row


# ---------------------------------------------------------------------------------------
# Timing


def time_ms(fn: Callable[[], object], device: torch.device, dry_run: bool) -> float:
    """Median milliseconds: triton.testing.do_bench (CUDA events, L2 flushed between runs) on a GPU;
    on the CPU (dry run) a few host-timed repeats of the same callable."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=10, rep=50, return_mode="median"))  # ms of warm-up and of repeats
    return 1e3 * median_seconds(fn, repeats=1 if dry_run else 5, warmup=0 if dry_run else 1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------
# Output


def write_outputs(results: dict, out_dir: Path, markdown: str) -> tuple[Path, Path]:
    """suite.json and suite.md, each written to a temporary name and renamed (never half-written)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "suite.json", out_dir / "suite.md"
    for path, text in zip(paths, (json.dumps(results, indent=1, default=_jsonable) + "\n", markdown)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return paths


def _jsonable(v):
    if dataclasses.is_dataclass(v):
        return dataclasses.asdict(v)
    if isinstance(v, (torch.device, torch.dtype, Path)):
        return str(v)
    return repr(v)


def md_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A Markdown table of `rows` with (header, key) columns; absent values are blank."""
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(k)) for _, k in columns) + " |")
    return "\n".join(lines)


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "**NO**"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else (f"{v:.3g}" if abs(v) < 1e-2 and v else f"{v:,.3f}".rstrip("0").rstrip("."))
    if isinstance(v, dict):
        return ", ".join(f"{k} {_cell(x)}" for k, x in v.items())
    return str(v).replace("|", "/")
