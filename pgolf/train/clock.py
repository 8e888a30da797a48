"""The run's one clock: the training cap, the export reserve carved out of it, the eval budget.

Training time counts only while the optimizer loop runs (spec §4.3): validation and
checkpoints pause it, and work that reads training data after the loop (GPTQ's Hessians)
runs on it. With a cap, the loop stops at cap − reserve, so the reserved work still ends
inside the cap; the LR schedule anneals to that same stop (`stop_ms`). Ranks agree on
one elapsed time (the slowest), so the schedule and the stop agree across ranks.

The reserve is a guess made before the run; `ReserveCheck` compares it with what the export's
work measured (Hessian collection + GPTQ, frontier F7.2: #2135 reserved 0.5 s for 6.9 s of
Hessians). A reserve below the measurement is a warning in the log (in a capped run: without a
cap the reserve holds nothing back) and in result.json, never
an error, even when the Hessians push the training clock past the cap (`within_cap` false):
by then the run is over, and its checkpoint, artifact and score are still worth keeping for
development; whoever submits a run must check `within_cap` (a record must be inside the cap).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Iterator

import torch

from pgolf.config import Config
from pgolf.distributed import DistEnv, max_over_ranks
from pgolf.errors import PgolfError


@dataclass
class Stopwatch:
    seconds: float = 0.0


@dataclass
class Clock:
    cap_ms: float  # the training cap; 0: none
    reserve_ms: float  # kept back from the cap for the export's training-data work (GPTQ Hessians)
    eval_budget_ms: float  # the final score's eval limit; 0: none
    env: DistEnv
    train_ms: float = 0.0  # training time banked before the running segment
    _t0: float | None = None  # start of the running segment; None while paused

    @classmethod
    def from_config(cls, cfg: Config, env: DistEnv) -> "Clock":
        cap_ms = 1000.0 * cfg.train.max_wallclock_seconds
        reserve_ms = 1000.0 * cfg.export.reserve_seconds if cfg.export.method == "gptq" else 0.0
        if cap_ms and reserve_ms >= cap_ms:
            raise PgolfError(f"export.reserve_seconds={cfg.export.reserve_seconds} leaves no training time under "
                             f"train.max_wallclock_seconds={cfg.train.max_wallclock_seconds}")
        return cls(cap_ms, reserve_ms, 1000.0 * cfg.eval.budget_seconds, env)

    @property
    def stop_ms(self) -> float:
        """When the training loop stops (and the warmdown ends); 0: no cap."""
        return self.cap_ms - self.reserve_ms if self.cap_ms else 0.0

    def _sync(self) -> None:
        if self.env.device.type == "cuda":
            torch.cuda.synchronize()

    def start(self) -> None:
        self._sync()
        self._t0 = time.perf_counter()

    def pause(self) -> None:
        self._sync()
        self.train_ms = self.running_ms()
        self._t0 = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Work that is not training (validation, checkpoints)."""
        self.pause()
        yield
        self.start()

    def running_ms(self) -> float:
        """This rank's training time so far (no sync: for logs)."""
        return self.train_ms + (1000.0 * (time.perf_counter() - self._t0) if self._t0 is not None else 0.0)

    def elapsed_ms(self) -> float:
        """The training time every rank agrees on (the slowest rank's)."""
        return max_over_ranks(self.running_ms(), self.env)

    def out_of_time(self, elapsed_ms: float) -> bool:
        return bool(self.stop_ms) and elapsed_ms >= self.stop_ms

    def within_cap(self) -> bool:
        return not self.cap_ms or self.train_ms <= self.cap_ms

    @contextlib.contextmanager
    def on_training_time(self) -> Iterator[Stopwatch]:
        """Work after the loop (the clock is paused) that counts as training: it reads training data."""
        before = self.train_ms
        watch = Stopwatch()
        self.start()
        yield watch
        self.pause()
        watch.seconds = (self.train_ms - before) / 1000.0

    @contextlib.contextmanager
    def timed(self) -> Iterator[Stopwatch]:
        watch = Stopwatch()
        self._sync()
        t = time.perf_counter()
        yield watch
        self._sync()
        watch.seconds = time.perf_counter() - t

    def within_eval_budget(self, seconds: float) -> bool:
        return not self.eval_budget_ms or 1000.0 * seconds <= self.eval_budget_ms


@dataclass(frozen=True)
class ReserveCheck:
    """The export reserve against the measured Hessian collection and GPTQ time (seconds)."""
    reserve_seconds: float
    hessian_seconds: float
    gptq_seconds: float
    within_cap: bool  # the training clock, Hessians included, ended inside the cap
    capped: bool = True  # the run has a training cap (else the reserve holds nothing back)

    @property
    def measured_seconds(self) -> float:
        return self.hessian_seconds + self.gptq_seconds

    @property
    def sufficient(self) -> bool:
        return self.reserve_seconds >= self.measured_seconds

    def as_dict(self) -> dict:
        return {"reserve_seconds": self.reserve_seconds, "hessian_seconds": round(self.hessian_seconds, 3),
                "gptq_seconds": round(self.gptq_seconds, 3), "measured_seconds": round(self.measured_seconds, 3),
                "sufficient": self.sufficient, "within_cap": self.within_cap, "capped": self.capped}

    def warning(self) -> str | None:
        if self.sufficient or not self.capped:
            return None
        over = "" if self.within_cap else "; the Hessians ran past the training cap, so this run is not a valid record"
        return (f"export.reserve_seconds={self.reserve_seconds:g} is below the measured Hessian + GPTQ time "
                f"{self.measured_seconds:.2f} s ({self.hessian_seconds:.2f} + {self.gptq_seconds:.2f}): raise it to "
                f"at least {math.ceil(self.measured_seconds)}{over}")
