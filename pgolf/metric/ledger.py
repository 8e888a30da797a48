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
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pgolf.errors import PgolfError
from pgolf.fileio import atomic_open

LEDGER_FORMAT = "pgolf.ledger/1"
_ARRAYS = ("scored_after", "times_scored", "update_lengths", "update_positions")


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


class ScoreLedger:
    def __init__(self, n_positions: int):
        if n_positions < 2:
            raise ValueError(f"a ledger needs a stream of at least 2 positions, got {n_positions}")
        self.n_positions = n_positions
        self.scored_after = np.full(n_positions, -1, dtype=np.int64)  # first scoring's update count
        self.scored_after[0] = 0
        self.times_scored = np.zeros(n_positions, dtype=np.int32)
        self._updates: list[np.ndarray] = []

    @property
    def updates(self) -> int:
        return len(self._updates)

    def update_positions(self, k: int) -> np.ndarray:
        """Positions read by update k (1-based)."""
        return self._updates[k - 1]

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
        self._updates.append(np.unique(self._checked(positions)))

    def c3_violations(self, limit: int = 10) -> tuple[int, list[C3Violation]]:
        """(number of (update, position) pairs that read a position not yet scored, the first `limit`)."""
        total, found = 0, []
        for k, used in enumerate(self._updates, 1):
            when = self.scored_after[used]
            bad = (when < 0) | (when >= k)
            n = int(bad.sum())
            total += n
            for p in used[bad][: max(0, limit - len(found))]:
                found.append(C3Violation(k, int(p), int(self.scored_after[p])))
        return total, found

    # -- persistence: the TTT engine writes it next to its result; `pgolf check` reads it --

    def save(self, path: str | Path) -> None:
        lengths = np.array([u.size for u in self._updates], dtype=np.int64)
        flat = np.concatenate(self._updates) if self._updates else np.zeros(0, np.int64)
        arrays = {"scored_after": self.scored_after, "times_scored": self.times_scored,
                  "update_lengths": lengths, "update_positions": flat}
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
        lengths, flat = arrays["update_lengths"], arrays["update_positions"]
        if scored_after.shape != times.shape or int(lengths.sum()) != flat.size or (lengths < 0).any():
            raise PgolfError(f"{path}: inconsistent ledger arrays")
        ledger = cls(scored_after.size)
        ledger.scored_after, ledger.times_scored = scored_after.astype(np.int64), times.astype(np.int32)
        ledger._updates = [ledger._checked(u) for u in np.split(flat, np.cumsum(lengths)[:-1])] if lengths.size else []
        return ledger
