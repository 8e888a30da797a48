"""Auditing a score ledger (pgolf.metric.ledger): reading a saved one back, and judging C3 from it.

Tools' code (`pgolf check`, the tests): a run only records its ledger and saves it, so a packed script
carries none of this. Update k (1-based) may read position p only if p was scored when at most k − 1
updates had been applied; position 0, the stream's first BOS, is known before any update.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pgolf.errors import PgolfError
from pgolf.metric.ledger import ARRAYS, LEDGER_FORMAT, ScoreLedger, digest


def _expand(ranges: np.ndarray) -> np.ndarray:
    """The sorted unique positions of inclusive ranges [k, 2]."""
    if not ranges.size:
        return np.zeros(0, np.int64)
    return np.unique(np.concatenate([np.arange(a, b + 1) for a, b in ranges.tolist()]))


@dataclass(frozen=True)
class C3Violation:
    update: int  # 1-based index of the update
    position: int  # a position it read
    scored_after: int  # updates applied when that position was scored (-1: never scored)


def update_positions(ledger: ScoreLedger, k: int) -> np.ndarray:
    """Positions read by update k (1-based), sorted, unique."""
    return _expand(ledger.read_ranges[k - 1])


def reads(ledger: ScoreLedger) -> int:
    """Positions read, summed over the updates (a position read by two ranges of one update counts twice)."""
    return int(sum(int((u[:, 1] - u[:, 0] + 1).sum()) for u in ledger.read_ranges))


def c3_violations(ledger: ScoreLedger, limit: int = 10) -> tuple[int, list[C3Violation]]:
    """(number of (update, position) pairs that read a position not yet scored, the first `limit`).

    Each range's earliest and latest scoring are found at once (reduceat); only ranges that
    fail are expanded, to count and name their positions."""
    if not ledger.read_ranges:
        return 0, []
    ranges = np.concatenate(ledger.read_ranges)
    update_of = np.repeat(np.arange(1, ledger.updates + 1), [u.shape[0] for u in ledger.read_ranges])
    by_start = np.argsort(ranges[:, 0], kind="stable")  # so the gaps reduceat also spans add up to <= N
    ranges, update_of = ranges[by_start], update_of[by_start]
    when = np.append(ledger.scored_after, 0)  # a sentinel: a range may end at the last position
    bounds = np.stack([ranges[:, 0], ranges[:, 1] + 1], axis=1).reshape(-1)
    lo = np.minimum.reduceat(when, bounds)[::2] if bounds.size else bounds
    hi = np.maximum.reduceat(when, bounds)[::2] if bounds.size else bounds
    failing = sorted(set(update_of[(lo < 0) | (hi >= update_of)].tolist()))
    total, found = 0, []
    for k in failing:
        used = update_positions(ledger, k)
        at = ledger.scored_after[used]
        bad = used[(at < 0) | (at >= k)]
        total += bad.size
        for p in bad[: max(0, limit - len(found))]:
            found.append(C3Violation(k, int(p), int(ledger.scored_after[p])))
    return total, found


def load_ledger(path: str | Path) -> ScoreLedger:
    """A saved ledger, verified (format, checksum, consistent arrays) before use."""
    try:
        with np.load(path, allow_pickle=False) as z:
            fmt = str(z["format"])
            if fmt != LEDGER_FORMAT:
                raise PgolfError(f"{path}: ledger format {fmt!r}, expected {LEDGER_FORMAT!r}")
            arrays = {name: z[name] for name in ARRAYS}
            recorded = str(z["sha256"])
    except (OSError, ValueError, KeyError) as e:
        raise PgolfError(f"{path}: not a readable score ledger ({e})") from None
    if digest(arrays) != recorded:
        raise PgolfError(f"{path}: the score ledger does not match its checksum (edited or damaged)")
    scored_after, times = arrays["scored_after"], arrays["times_scored"]
    lengths, flat = arrays["update_lengths"], arrays["update_ranges"]
    if (scored_after.ndim != 1 or scored_after.shape != times.shape or (lengths < 0).any()
            or flat.ndim != 2 or flat.shape[1] != 2 or int(lengths.sum()) != flat.shape[0]):
        raise PgolfError(f"{path}: inconsistent ledger arrays")
    ledger = ScoreLedger(scored_after.size)
    ledger.scored_after, ledger.times_scored = scored_after.astype(np.int64), times.astype(np.int32)
    for r in (np.split(flat, np.cumsum(lengths)[:-1]) if lengths.size else []):
        ledger.update_ranges(r[:, 0], r[:, 1])
    return ledger
