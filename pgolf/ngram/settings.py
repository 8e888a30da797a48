"""The n-gram tilt's three settings; defaults are PR #2135's run (frontier-spec F1.4, F11)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from pgolf.errors import PgolfError
from pgolf.ngram.keys import MAX_ORDER


@dataclass(frozen=True)
class NgramSettings:
    order: int = 16  # n: the context is the n-1 tokens before the scored one
    threshold: float = 0.8  # gate: a hint fires where top count / total >= this (compared in float32)
    beta: float = 2.625  # tilt strength: the hint's logit is raised by beta before renormalising

    def __post_init__(self) -> None:
        if not isinstance(self.order, int) or not 2 <= self.order <= MAX_ORDER:
            raise PgolfError(f"ngram order must be an integer in [2, {MAX_ORDER}], got {self.order!r}")
        if not 0.0 < float(self.threshold) <= 1.0:
            raise PgolfError(f"ngram threshold must be in (0, 1], got {self.threshold!r}")
        if not math.isfinite(float(self.beta)) or self.beta < 0:
            raise PgolfError(f"ngram beta must be a finite number >= 0, got {self.beta!r}")
