"""The score ledger: what an adaptive eval did, in order, so that C3 is a checkable fact.

Condition C3 (challenge-spec §1.5): the score for x_t must be computed before any
adaptation step that uses x_t. An eval mode that adapts (test-time training, or any state
built from val tokens) writes, as it runs:

- `scored(positions)`: these target positions were scored now; the ledger stores, per
  position, the number of updates applied to the scoring model at that moment;
- `update(positions)`: one update was applied, and it read the tokens at these stream
  positions (inputs and targets alike).

`c3_violations()` then lists every update that read a position not scored before it:
update k (1-based) may read position p only if p was scored when at most k − 1 updates
had been applied. Position 0, the stream's first BOS, is never a target and is known
before any update. A mode that never adapts writes only `scored` calls; its ledger has
no updates and holds by construction.

One ledger describes one model replica (one rank): the updates it lists are the ones
applied to the model that did its scoring. Positions are absolute val-stream positions.
An update's positions are kept as sorted disjoint ranges: TTT reads contiguous spans, so a
full-size run (thousands of updates of 32K positions each) costs kilobytes, not gigabytes.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pgolf.errors import PgolfError
from pgolf.fileio import atomic_open

LEDGER_FORMAT = "pgolf.ledger/2"
_ARRAYS = ("scored_after", "times_scored", "update_ranges", "range_starts", "range_ends")


def _digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the arrays' dtypes, shapes and bytes: a ledger that was edited is refused."""
    h = hashlib.sha256(LEDGER_FORMAT.encode())
    for name in _ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _positions(positions) -> np.ndarray:
    if hasattr(positions, "detach"):  # a torch tensor, on any device
        positions = positions.detach().cpu().numpy()
    return np.asarray(positions, dtype=np.int64).reshape(-1)


@dataclass(frozen=True)
class C3Violation:
    update: int  # 1-based index of the update
    position: int  # a position it read
    scored_after: int  # updates applied when that position was scored (-1: never scored)


def _ranges(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique positions as disjoint half-open ranges [starts, ends)."""
    p = np.unique(p)
    if p.size == 0:
        return p, p
    breaks = np.flatnonzero(np.diff(p) != 1) + 1
    return p[np.r_[0, breaks]], p[np.r_[breaks - 1, p.size - 1]] + 1


class ScoreLedger:
    def __init__(self, n_positions: int):
        if n_positions < 2:
            raise ValueError(f"a ledger needs a stream of at least 2 positions, got {n_positions}")
        self.n_positions = n_positions
        self.scored_after = np.full(n_positions, -1, dtype=np.int64)  # first scoring's update count
        self.scored_after[0] = 0
        self.times_scored = np.zeros(n_positions, dtype=np.int32)
        self._updates: list[tuple[np.ndarray, np.ndarray]] = []  # per update: range starts, ends

    @property
    def updates(self) -> int:
        return len(self._updates)

    def update_positions(self, k: int) -> np.ndarray:
        """Positions read by update k (1-based), sorted."""
        starts, ends = self._updates[k - 1]
        return np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)]) if starts.size else starts

    def reads(self) -> int:
        """Positions read, summed over the updates."""
        return int(sum(int((e - s).sum()) for s, e in self._updates))

    def _checked(self, positions) -> np.ndarray:
        p = _positions(positions)
        if p.size and (p.min() < 0 or p.max() >= self.n_positions):
            raise PgolfError(f"ledger: position out of range [0, {self.n_positions}): {int(p.min())}..{int(p.max())}")
        return p

    def scored(self, positions) -> None:
        p = self._checked(positions)
        first = p[self.times_scored[p] == 0]
        self.scored_after[first] = self.updates
        np.add.at(self.times_scored, p, 1)

    def update(self, positions) -> None:
        self._updates.append(_ranges(self._checked(positions)))

    def update_range(self, start: int, end: int) -> None:
        """One update that read the positions [start, end): no position array is made."""
        if not 0 <= start < end <= self.n_positions:
            raise PgolfError(f"ledger: range [{start}, {end}) is empty or outside [0, {self.n_positions})")
        self._updates.append((np.array([start], np.int64), np.array([end], np.int64)))

    def c3_violations(self, limit: int = 10) -> tuple[int, list[C3Violation]]:
        """(number of (update, position) pairs that read a position not yet scored, the first `limit`)."""
        never = np.iinfo(np.int64).max  # a position never scored is later than any update
        when = np.append(np.where(self.scored_after < 0, never, self.scored_after), -1)  # -1: reduceat's end sentinel
        total, found = 0, []
        for k, (starts, ends) in enumerate(self._updates, 1):
            if starts.size == 0:
                continue
            latest = np.maximum.reduceat(when, np.stack([starts, ends], 1).ravel())[::2]  # per range: max over [a, b)
            for a, b in zip(starts[latest >= k], ends[latest >= k]):
                bad = np.flatnonzero(when[a:b] >= k) + a
                total += bad.size
                for p in bad[: max(0, limit - len(found))]:
                    found.append(C3Violation(k, int(p), int(self.scored_after[p])))
        return total, found

    # -- persistence: the TTT engine writes it next to its result; `pgolf check` reads it --

    def save(self, path: str | Path) -> None:
        counts = np.array([st.size for st, _ in self._updates], dtype=np.int64)
        starts = np.concatenate([st for st, _ in self._updates]) if self._updates else np.zeros(0, np.int64)
        ends = np.concatenate([en for _, en in self._updates]) if self._updates else np.zeros(0, np.int64)
        arrays = {"scored_after": self.scored_after, "times_scored": self.times_scored,
                  "update_ranges": counts, "range_starts": starts, "range_ends": ends}
        with atomic_open(path, "wb") as f:
            np.savez(f, format=np.array(LEDGER_FORMAT), sha256=np.array(_digest(arrays)), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "ScoreLedger":
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["format"]) != LEDGER_FORMAT:
                    raise PgolfError(f"{path}: ledger format {str(z['format'])!r}, expected {LEDGER_FORMAT!r}")
                arrays = {name: z[name] for name in _ARRAYS}
                recorded = str(z["sha256"])
        except (OSError, ValueError, KeyError) as e:
            raise PgolfError(f"{path}: not a readable score ledger ({e})") from None
        if _digest(arrays) != recorded:
            raise PgolfError(f"{path}: the score ledger does not match its checksum (edited or damaged)")
        scored_after, times = arrays["scored_after"], arrays["times_scored"]
        counts, starts, ends = arrays["update_ranges"], arrays["range_starts"], arrays["range_ends"]
        if (scored_after.shape != times.shape or scored_after.ndim != 1 or scored_after.size < 2
                or int(counts.sum()) != starts.size or starts.shape != ends.shape or (counts < 0).any()
                or (starts.size and (starts.min() < 0 or ends.max() > scored_after.size or (ends <= starts).any()))):
            raise PgolfError(f"{path}: inconsistent ledger arrays")
        ledger = cls(scored_after.size)
        ledger.scored_after, ledger.times_scored = scored_after.astype(np.int64), times.astype(np.int32)
        cut = np.cumsum(counts)[:-1]
        ledger._updates = list(zip(np.split(starts.astype(np.int64), cut), np.split(ends.astype(np.int64), cut))) \
            if counts.size else []
        return ledger
