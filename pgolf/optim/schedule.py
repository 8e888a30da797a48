"""Learning-rate and momentum schedules (spec §4.2-4.3, §5.8-5.9)."""
from __future__ import annotations

from dataclasses import dataclass

from pgolf.config import OptimConfig, TrainConfig
from pgolf.errors import PgolfError


@dataclass(frozen=True)
class LRSchedule:
    """lr = base_lr * lr_mul(step, elapsed_ms), lr_mul = warmup * max(warmdown, min_lr).

    - optional linear warmup over `lr_warmup_steps`
    - one warmdown, linear to 0, of two kinds:
      - `warmdown_iters` (the baseline): over the last warmdown_iters steps, by step count, or by
        time: the window is warmdown_iters times the average step time so far
      - `warmdown_frac` (the records, spec §5.9): over the last warmdown_frac of training,
        warmdown = min(1, (1 − frac) / warmdown_frac), frac = elapsed / horizon when time-based,
        else step / iterations
      Time-based, both end at `horizon_ms`, when the training loop stops (the wallclock cap less
      any time the run keeps back for export: the run's clock says).
    - `min_lr`: the floor of the warmdown part (the records: 0.1, reached at frac = 1 − warmdown_frac·min_lr)
    """

    iterations: int
    warmdown_iters: int
    lr_warmup_steps: int
    time_based: bool
    horizon_ms: float
    warmdown_frac: float = 0.0
    min_lr: float = 0.0

    @classmethod
    def from_config(cls, cfg: TrainConfig, horizon_ms: float | None = None) -> "LRSchedule":
        """`horizon_ms`: when training stops; default the wallclock cap."""
        capped = cfg.max_wallclock_seconds > 0
        time_based = cfg.warmdown == "time" or (cfg.warmdown == "auto" and capped)
        if time_based and not capped:
            raise PgolfError("train.warmdown=time needs a wallclock cap (train.max_wallclock_seconds > 0)")
        if cfg.warmdown_frac > 0 and cfg.warmdown_iters > 0:  # validate() says so too; a schedule built alone
            raise PgolfError("train.warmdown_frac and train.warmdown_iters are two warmdowns: set one of them to 0")
        horizon = 1000.0 * cfg.max_wallclock_seconds if horizon_ms is None else horizon_ms
        return cls(cfg.iterations, cfg.warmdown_iters, cfg.lr_warmup_steps, time_based, horizon,
                   cfg.warmdown_frac, cfg.min_lr)

    def lr_mul(self, step: int, elapsed_ms: float) -> float:
        warmup = min(1.0, (step + 1) / self.lr_warmup_steps) if self.lr_warmup_steps > 0 else 1.0
        return warmup * max(self.warmdown_mul(step, elapsed_ms), self.min_lr)

    def warmdown_mul(self, step: int, elapsed_ms: float) -> float:
        """The warmdown factor alone (1 until the warmdown starts, then down to 0; no LR warmup, no
        min_lr floor): what late QAT's threshold is read against, so the LR warmup's small
        multipliers never switch it on and a threshold under the floor still does."""
        if self.warmdown_frac > 0:
            return min(1.0, max(1.0 - self._fraction(step, elapsed_ms), 0.0) / self.warmdown_frac)
        if self.warmdown_iters <= 0:
            return 1.0
        if self.time_based:
            warmdown_ms = self.warmdown_iters * elapsed_ms / max(step, 1)
            remaining_ms = max(self.horizon_ms - elapsed_ms, 0.0)
            return remaining_ms / max(warmdown_ms, 1e-9) if remaining_ms <= warmdown_ms else 1.0
        if step >= self.iterations - self.warmdown_iters:
            return max((self.iterations - step) / self.warmdown_iters, 0.0)
        return 1.0

    def _fraction(self, step: int, elapsed_ms: float) -> float:
        """How far training is: of the clock's horizon when time-based, else of the iterations."""
        if self.time_based:
            return elapsed_ms / max(self.horizon_ms, 1e-9)
        return step / max(self.iterations, 1)


def muon_momentum(step: int, cfg: OptimConfig) -> float:
    """Muon's momentum at optimizer step `step` (0 for the first): linear per step from
    `muon_momentum_warmup_start` to `muon_momentum` over `muon_momentum_warmup_steps`, then
    constant (spec §5.8: 0.92 -> 0.97 over 1500 steps)."""
    if cfg.muon_momentum_warmup_steps <= 0:
        return cfg.muon_momentum
    frac = min(step / cfg.muon_momentum_warmup_steps, 1.0)
    return (1 - frac) * cfg.muon_momentum_warmup_start + frac * cfg.muon_momentum
