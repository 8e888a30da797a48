"""The score ledger keeps updates as position ranges (pgolf.metric.ledger): same verdicts, less memory."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import pytest

from pgolf.errors import PgolfError
from pgolf.fileio import atomic_open
from pgolf.metric.ledger import ScoreLedger, position_runs
from pgolf.metric.ledger_audit import c3_violations, load_ledger, update_positions


def naive_violations(scored_after, updates):
    found = []
    for k, used in enumerate(updates, 1):
        for p in sorted(set(used)):
            if scored_after[p] < 0 or scored_after[p] >= k:
                found.append((k, p))
    return found


@given(n=st.integers(2, 60), events=st.lists(st.tuples(st.booleans(), st.lists(st.integers(0, 59), max_size=8)),
                                            max_size=12), as_ranges=st.booleans())
@settings(max_examples=200, deadline=None)
def test_range_ledger_finds_exactly_the_naive_violations(n, events, as_ranges):
    ledger, updates = ScoreLedger(n), []
    for is_update, raw in events:
        pos = [p % n for p in raw]
        if not is_update:
            ledger.scored(pos)
        elif as_ranges and pos:
            starts = np.array(pos[::2])
            ends = np.maximum(starts, np.array((pos[1::2] + pos[:1])[: starts.size]))
            ledger.update_ranges(starts, ends)
            updates.append([p for a, b in zip(starts, ends) for p in range(a, b + 1)])
        else:
            ledger.update(pos)
            updates.append(pos)
    want = naive_violations(ledger.scored_after, updates)
    total, found = c3_violations(ledger, limit=1000)
    assert total == len(want) and [(v.update, v.position) for v in found] == want
    assert all(update_positions(ledger, k).tolist() == sorted(set(u)) for k, u in enumerate(updates, 1))


def test_runs_a_roundtrip_and_the_old_format_refused(tmp_path):
    assert position_runs(np.array([5, 1, 2, 3, 7, 8, 2])).tolist() == [[1, 3], [5, 5], [7, 8]]
    ledger = ScoreLedger(12)
    ledger.scored(range(1, 6))
    ledger.update_ranges([0, 4], [3, 6])  # 6 is not scored yet
    ledger.save(tmp_path / "l.npz")
    again = load_ledger(tmp_path / "l.npz")
    assert c3_violations(again) == c3_violations(ledger) and c3_violations(again)[0] == 1
    with atomic_open(tmp_path / "old.npz", "wb") as f:  # a ledger written before updates were ranges: refused
        np.savez(f, format=np.array("pgolf.ledger/1"), scored_after=ledger.scored_after,
                 times_scored=ledger.times_scored, update_lengths=np.array([7]),
                 update_positions=np.array([0, 1, 2, 3, 4, 5, 6]))
    with pytest.raises(PgolfError, match="ledger format 'pgolf.ledger/1'"):
        load_ledger(tmp_path / "old.npz")
