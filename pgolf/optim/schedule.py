"""Learning-rate and momentum schedules (spec §4.2-4.3)."""
from __future__ import annotations

from dataclasses import dataclass

from pgolf.config import OptimConfig, TrainConfig
from pgolf.errors import PgolfError


@dataclass(frozen=True)
class LRSchedule:
    """lr = base_lr * lr_mul(step, elapsed_ms).

    - optional linear warmup over `lr_warmup_steps`
    - warmdown to 0 over the last `warmdown_iters` steps: by step count, or (the
      baseline) by time: the warmdown window is warmdown_iters times the average step
      time so far, ending at `horizon_ms`, when the training loop stops (the wallclock
      cap less any time the run keeps back for export: the run's clock says)
    """

    iterations: int
    warmdown_iters: int
    lr_warmup_steps: int
    time_based: bool
    horizon_ms: float

    @classmethod
    def from_config(cls, cfg: TrainConfig, horizon_ms: float | None = None) -> "LRSchedule":
        """`horizon_ms`: when training stops; default the wallclock cap."""
        capped = cfg.max_wallclock_seconds > 0
        time_based = cfg.warmdown == "time" or (cfg.warmdown == "auto" and capped)
        if time_based and not capped:
            raise PgolfError("train.warmdown=time needs a wallclock cap (train.max_wallclock_seconds > 0)")
        horizon = 1000.0 * cfg.max_wallclock_seconds if horizon_ms is None else horizon_ms
        return cls(cfg.iterations, cfg.warmdown_iters, cfg.lr_warmup_steps, time_based, horizon)

    def lr_mul(self, step: int, elapsed_ms: float) -> float:
        warmup = min(1.0, (step + 1) / self.lr_warmup_steps) if self.lr_warmup_steps > 0 else 1.0
        return warmup * self.warmdown_mul(step, elapsed_ms)

    def warmdown_mul(self, step: int, elapsed_ms: float) -> float:
        """The warmdown factor alone (1 until the warmdown starts, then down to 0): what late QAT's
        threshold is read against, so the LR warmup's small multipliers never switch it on."""
        if self.warmdown_iters <= 0:
            return 1.0
        if self.time_based:
            warmdown_ms = self.warmdown_iters * elapsed_ms / max(step, 1)
            remaining_ms = max(self.horizon_ms - elapsed_ms, 0.0)
            return remaining_ms / max(warmdown_ms, 1e-9) if remaining_ms <= warmdown_ms else 1.0
        if step >= self.iterations - self.warmdown_iters:
            return max((self.iterations - step) / self.warmdown_iters, 0.0)
        return 1.0


def muon_momentum(step: int, cfg: OptimConfig) -> float:
    """Linear warmup of Muon's momentum from `muon_momentum_warmup_start`."""
    if cfg.muon_momentum_warmup_steps <= 0:
        return cfg.muon_momentum
    frac = min(step / cfg.muon_momentum_warmup_steps, 1.0)
    return (1 - frac) * cfg.muon_momentum_warmup_start + frac * cfg.muon_momentum
