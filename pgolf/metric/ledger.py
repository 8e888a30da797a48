"""The score ledger: what an adaptive eval did, in order, so that C3 is a checkable fact.

Condition C3 (challenge-spec §1.5): the score for x_t must be computed before any
adaptation step that uses x_t. An eval mode that adapts (test-time training, or any state
built from val tokens) writes, as it runs:

- `scored(positions)`: these target positions were scored now; the ledger stores, per
  position, the number of updates applied to the scoring model at that moment;
- `update(positions)`: one update was applied, and it read the tokens at these stream
  positions (inputs and targets alike); `update_ranges(starts, ends)` says the same of the
  inclusive ranges [start, end] (what a TTT window reads). Updates are kept as ranges, so a
  TTT eval re-reading 2048-token windows every step costs two numbers per window, not 2048.

`c3_violations` (pgolf.metric.ledger_audit, with reading a saved ledger back: tools' code, not a
run's) then lists every update that read a position not scored before it:
update k (1-based) may read position p only if p was scored when at most k − 1 updates
had been applied. Position 0, the stream's first BOS, is never a target and is known
before any update. A mode that never adapts writes only `scored` calls; its ledger has
no updates and holds by construction.

One ledger describes one model replica (one rank): the updates it lists are the ones
applied to the model that did its scoring. Positions are absolute val-stream positions.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pgolf.errors import PgolfError
from pgolf.fileio import atomic_open

LEDGER_FORMAT = "pgolf.ledger/2"
ARRAYS = ("scored_after", "times_scored", "update_lengths", "update_ranges")


def digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the arrays' dtypes, shapes and bytes: a ledger that was edited is refused."""
    h = hashlib.sha256(LEDGER_FORMAT.encode())
    for name in ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _positions(positions) -> np.ndarray:
    if hasattr(positions, "detach"):  # a torch tensor, on any device
        positions = positions.detach().cpu().numpy()
    return np.asarray(positions, dtype=np.int64).reshape(-1)


def position_runs(p: np.ndarray) -> np.ndarray:
    """Sorted unique positions as inclusive ranges [k, 2]."""
    p = np.unique(p)
    if not p.size:
        return np.zeros((0, 2), np.int64)
    cut = np.flatnonzero(np.diff(p) != 1)
    return np.stack([p[np.r_[0, cut + 1]], p[np.r_[cut, p.size - 1]]], axis=1)


class ScoreLedger:
    def __init__(self, n_positions: int):
        if n_positions < 2:
            raise ValueError(f"a ledger needs a stream of at least 2 positions, got {n_positions}")
        self.n_positions = n_positions
        self.scored_after = np.full(n_positions, -1, dtype=np.int64)  # first scoring's update count
        self.scored_after[0] = 0
        self.times_scored = np.zeros(n_positions, dtype=np.int32)
        self.read_ranges: list[np.ndarray] = []  # per update, the inclusive ranges [k, 2] it read

    @property
    def updates(self) -> int:
        return len(self.read_ranges)

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
        self.read_ranges.append(position_runs(self._checked(positions)))

    def update_ranges(self, starts, ends) -> None:
        """One update that read every position of the inclusive ranges [starts[i], ends[i]]."""
        a, b = self._checked(starts), self._checked(ends)
        if a.shape != b.shape or (a > b).any():
            raise PgolfError(f"ledger: {a.size} range starts for {b.size} ends, or a start after its end")
        self.read_ranges.append(np.stack([a, b], axis=1))

    # -- persistence: the TTT engine writes it next to its result; `pgolf check` reads it (ledger_audit) --

    def save(self, path: str | Path) -> None:
        lengths = np.array([u.shape[0] for u in self.read_ranges], dtype=np.int64)
        flat = np.concatenate(self.read_ranges) if self.read_ranges else np.zeros((0, 2), np.int64)
        arrays = {"scored_after": self.scored_after, "times_scored": self.times_scored,
                  "update_lengths": lengths, "update_ranges": flat}
        with atomic_open(path, "wb") as f:
            np.savez(f, format=np.array(LEDGER_FORMAT), sha256=np.array(digest(arrays)), **arrays)
