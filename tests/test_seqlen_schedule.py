"""The progressive sequence schedule of #2014 (frontier spec F5)."""
from __future__ import annotations

import dataclasses

import pytest

from pgolf.errors import PgolfError
from pgolf.optim.seqlen_schedule import SeqLenSchedule, SeqLenState

BUDGET_MS = 596_000.0  # 600 s cap - 4 s GPTQ reserve (#2014)


def test_the_record_schedule_and_its_shapes():
    s = SeqLenSchedule.progressive_2014()
    assert s.stages == ((0.1, 1024), (0.7, 2048), (1.0, 3072)) and s.rewarm_steps == 32
    assert s.shapes() == (1024, 2048, 3072) and s.max_seq_len == 3072
    # F5: compiled (1024, no loop), (2048, no loop), (2048, loop), (3072, loop) with looping at 0.35
    assert s.compile_shapes(0.35) == ((1024, False), (2048, False), (2048, True), (3072, True))
    assert s.compile_shapes(None) == ((1024, False), (2048, False), (3072, False))
    s.check_divides(98_304)  # 786,432 / 8
    with pytest.raises(PgolfError, match=r"\[3072\] do not divide the 65536"):
        s.check_divides(65_536)


@pytest.mark.parametrize("elapsed_ms, seq_len", [
    (0, 1024), (59_599, 1024), (59_600, 1024),  # progress 0.100 is still the first stage
    (59_601, 2048), (300_000, 2048), (417_200, 2048),
    (417_201, 3072), (596_000, 3072), (700_000, 3072),  # clipped past the budget
])
def test_switch_points_in_wallclock_time(elapsed_ms, seq_len):
    s = SeqLenSchedule.progressive_2014()
    assert s.seq_len_at(s.progress(elapsed_ms, BUDGET_MS)) == seq_len


def _simulate(s, step_ms, steps):
    state, plans = s.start(), []
    for step in range(steps):
        state, plan = s.advance(state, step, s.progress(step * step_ms, BUDGET_MS))
        plans.append(plan)
    return plans


def test_each_switch_rewarms_the_lr_over_32_steps():
    s = SeqLenSchedule.progressive_2014()
    plans = _simulate(s, 122.0, 4885)  # #2014's mean: 4,885 steps at 122.0 ms
    switches = [i for i, p in enumerate(plans) if p.switched]
    # progress > 0.1 first at step 489 (489 * 122 = 59,658 ms), > 0.7 at 3,420 (417,240 ms)
    assert switches == [489, 3420]
    assert [plans[i - 1].seq_len for i in switches] == [1024, 2048]
    for at in switches:
        assert [plans[at + k].lr_mult for k in range(32)] == [(k + 1) / 32 for k in range(32)]
        assert plans[at + 32].lr_mult == 1.0 and plans[at - 1].lr_mult == 1.0
    assert sum(p.lr_mult < 1.0 for p in plans) == 2 * 31
    assert [p.seq_len for p in plans[::1000]] == [1024, 2048, 2048, 2048, 3072]


def test_state_round_trips_a_checkpoint_mid_rewarm():
    s = SeqLenSchedule.progressive_2014()
    whole = _simulate(s, 122.0, 520)
    state = s.start()
    for step in range(500):  # stop 11 steps into the first re-warm
        state, _ = s.advance(state, step, s.progress(step * 122.0, BUDGET_MS))
    saved = dataclasses.asdict(state)
    assert saved == {"seq_len": 2048, "rewarm_from": 489}
    state = SeqLenState(**saved)
    for step in range(500, 520):
        state, plan = s.advance(state, step, s.progress(step * 122.0, BUDGET_MS))
        assert plan == whole[step]


def test_step_zero_switch_and_no_rewarm_options():
    s = SeqLenSchedule.progressive_2014()
    state, plan = s.advance(s.start(), 0, 0.5)  # a run starting past the first stage
    assert plan.seq_len == 2048 and plan.switched and plan.lr_mult == 1.0
    flat = SeqLenSchedule.parse("1024@0.1,2048@1", rewarm_steps=0)
    _, plan = flat.advance(flat.start(), 100, 0.5)
    assert plan.switched and plan.lr_mult == 1.0
    const = SeqLenSchedule.constant(2048)
    assert const.shapes() == (2048,) and all(not p.switched for p in _simulate(const, 122.0, 50))


def test_parse_extends_sorts_and_rejects():
    assert SeqLenSchedule.parse("2048@0.7, 1024@0.1").stages == ((0.1, 1024), (0.7, 2048), (1.0, 2048))
    assert SeqLenSchedule.step_progress(50, 200) == 0.25
    for bad, msg in [("1024", "expected LEN@FRACTION"), ("x@0.5", "expected LEN@FRACTION"),
                     ("1024@0.5,2048@0.5,3072@1", "rise strictly"), ("1024@1.5", "rise strictly"),
                     ("0@1.0", "positive integers"), ("", "no stages")]:
        with pytest.raises(PgolfError, match=msg):
            SeqLenSchedule.parse(bad)
    with pytest.raises(PgolfError, match="time budget"):
        SeqLenSchedule.progress(10, 0)


def test_a_switch_during_a_rewarm_restarts_it():
    s = SeqLenSchedule.parse("1024@0.10,2048@0.11,3072@1.0", rewarm_steps=32)
    plans = _simulate(s, 596.0, 200)  # progress 0.001 per step: switches after steps 100 and 110
    assert [i for i, p in enumerate(plans) if p.switched] == [101, 111]
    assert plans[110].lr_mult == 10 / 32 and plans[111].lr_mult == 1 / 32 and plans[142].lr_mult == 32 / 32


def test_compile_shapes_include_a_stage_that_ends_where_recurrence_starts():
    """Progress exactly at a stage's end is still that stage, and recurrence is on from loop_at:
    by step count (8 steps) step 2 trains at 32 with recurrence on, so (32, on) must compile."""
    s = SeqLenSchedule.parse("32@0.25,64@1.0")
    assert s.seq_len_at(SeqLenSchedule.step_progress(2, 8)) == 32
    assert s.compile_shapes(0.25) == ((32, False), (32, True), (64, True))
    assert s.compile_shapes(0.0) == ((32, True), (64, True))  # on from the first step
