"""The progressive training-sequence schedule of #2014 (frontier spec F5).

`TRAIN_SEQ_SCHEDULE=1024@0.100,2048@0.700,3072@1.000`: the active length is that of the first
stage whose threshold is >= the training progress (so exactly 0.100 is still 1024), where
progress = elapsed training ms / (cap − reserve), clipped to [0, 1] (596,000 ms in #2014).
The length only changes how the packed row is cut into documents (the batch stays one row
of the same tokens); after each switch, the LR multiplier is (k + 1) / 32 on the k-th step
since it (k = 0..31), on top of the usual schedule, for every optimizer.

The schedule is a frozen value; the trainer carries a `SeqLenState` (two ints, part of its
checkpoint) and calls `advance(state, step, progress)` once per step. `shapes()` lists every
length it will ever use, and `compile_shapes(loop_at)` the (length, recurrence on) pairs,
so the trainer can compile each during warm-up.
"""
from __future__ import annotations

from dataclasses import dataclass

from pgolf.errors import PgolfError

PROGRESSIVE_2014 = "1024@0.100,2048@0.700,3072@1.000"
REWARM_STEPS_2014 = 32


@dataclass(frozen=True)
class SeqLenState:
    """The active length and the step its re-warm began (None: no re-warm yet)."""

    seq_len: int
    rewarm_from: int | None = None


@dataclass(frozen=True)
class SeqLenPlan:
    """What step `step` trains with."""

    seq_len: int
    lr_mult: float
    switched: bool


@dataclass(frozen=True)
class SeqLenSchedule:
    """Stages (until, seq_len), thresholds increasing and the last one 1.0."""

    stages: tuple[tuple[float, int], ...]
    rewarm_steps: int = REWARM_STEPS_2014

    def __post_init__(self):
        if not self.stages:
            raise PgolfError("train seq schedule: no stages")
        ends = [u for u, _ in self.stages]
        if any(not 0.0 < u <= 1.0 for u in ends) or ends != sorted(set(ends)) or ends[-1] != 1.0:
            raise PgolfError(f"train seq schedule: thresholds {ends} must rise strictly within (0, 1] and end at 1.0")
        if any(int(n) != n or n <= 0 for _, n in self.stages):
            raise PgolfError(f"train seq schedule: lengths {[n for _, n in self.stages]} must be positive integers")
        if self.rewarm_steps < 0:
            raise PgolfError(f"train seq schedule: rewarm_steps {self.rewarm_steps} must be >= 0")

    @classmethod
    def parse(cls, spec: str, rewarm_steps: int = REWARM_STEPS_2014) -> "SeqLenSchedule":
        """'LEN@UNTIL,...' as in the records' TRAIN_SEQ_SCHEDULE; a last stage short of 1.0 is extended."""
        stages = []
        for raw in filter(None, (s.strip() for s in spec.split(","))):
            length, sep, until = raw.partition("@")
            try:
                if not sep:
                    raise ValueError
                stages.append((float(until), int(length)))
            except ValueError:
                raise PgolfError(f"train seq schedule stage {raw!r}: expected LEN@FRACTION, e.g. 1024@0.1") from None
        stages.sort()
        if stages and stages[-1][0] < 1.0:
            stages.append((1.0, stages[-1][1]))
        return cls(tuple(stages), rewarm_steps)

    @classmethod
    def constant(cls, seq_len: int) -> "SeqLenSchedule":
        return cls(((1.0, seq_len),), 0)

    @classmethod
    def progressive_2014(cls) -> "SeqLenSchedule":
        return cls.parse(PROGRESSIVE_2014, REWARM_STEPS_2014)

    @staticmethod
    def progress(elapsed_ms: float, budget_ms: float) -> float:
        """Elapsed training time over the budget (cap − reserve), clipped to [0, 1]."""
        if budget_ms <= 0:
            raise PgolfError(f"train seq schedule: time budget {budget_ms} ms must be positive")
        return min(max(elapsed_ms / budget_ms, 0.0), 1.0)

    @staticmethod
    def step_progress(step: int, iterations: int) -> float:
        """Progress by step count, for runs without a wallclock cap."""
        return min(max(step / max(iterations, 1), 0.0), 1.0)

    def seq_len_at(self, progress: float) -> int:
        for until, seq_len in self.stages:
            if progress <= until:
                return seq_len
        return self.stages[-1][1]

    def shapes(self) -> tuple[int, ...]:
        """Every length the schedule uses, in order of first use."""
        return tuple(dict.fromkeys(n for _, n in self.stages))

    @property
    def max_seq_len(self) -> int:
        return max(self.shapes())

    def compile_shapes(self, loop_at: float | None) -> tuple[tuple[int, bool], ...]:
        """(length, recurrence active) pairs training will meet; loop_at None: no recurrence.

        A stage spanning (start, until] meets "off" if it starts before loop_at and "on"
        if it ends at or after it: recurrence is on from progress loop_at, and a stage holds
        its own end (#2014: 1024 off, 2048 off and on, 3072 on).
        """
        items, start = [], 0.0
        for until, seq_len in self.stages:
            modes = [False] if loop_at is None else [m for m, hit in ((False, start < loop_at),
                                                                      (True, until >= loop_at)) if hit]
            items += [(seq_len, m) for m in modes or [False]]
            start = until
        return tuple(dict.fromkeys(items))

    def check_divides(self, local_tokens: int) -> None:
        """Every length must cut the per-rank row evenly (the records' rule)."""
        bad = [n for n in self.shapes() if local_tokens % n]
        if bad:
            raise PgolfError(f"train seq schedule lengths {bad} do not divide the {local_tokens} tokens per rank")

    def start(self) -> SeqLenState:
        return SeqLenState(self.stages[0][1])

    def rewarm_mult(self, steps_since_switch: int) -> float:
        if self.rewarm_steps <= 0:
            return 1.0
        return min((steps_since_switch + 1) / self.rewarm_steps, 1.0)

    def advance(self, state: SeqLenState, step: int, progress: float) -> tuple[SeqLenState, SeqLenPlan]:
        """The state after step `step` and what that step trains with.

        A switch at step 0 starts no re-warm (as in the records); a switch during a re-warm
        restarts it.
        """
        target = self.seq_len_at(progress)
        switched = target != state.seq_len
        if switched:
            state = SeqLenState(target, step if self.rewarm_steps > 0 and step > 0 else None)
        mult = 1.0 if state.rewarm_from is None else self.rewarm_mult(step - state.rewarm_from)
        return state, SeqLenPlan(state.seq_len, mult, switched)
