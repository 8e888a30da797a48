"""pgolf stats: the t tail and Welch tests against scipy, the two rules, run-set reading, the CLI."""
from __future__ import annotations

import json
import math

import pytest

from pgolf import stats
from pgolf.errors import PgolfError

scipy_stats = pytest.importorskip("scipy.stats")

# #2135 vs #2014 (frontier-spec F0): per-seed BPB are not in the spec, so these are made-up
# three-seed sets with the rows' means and spreads, plus the odd cases.
SETS = [
    ([1.05651, 1.05620, 1.05682], [1.05759, 1.05717, 1.05801]),
    ([1.0610, 1.0612, 1.0609, 1.0615], [1.0614, 1.0611, 1.0618]),
    ([1.2, 1.21], [1.19, 1.3, 1.25, 1.22, 1.28]),
    ([3.0, 3.5, 2.9], [3.0, 3.5, 2.9]),
]


@pytest.mark.parametrize("df", [0.7, 1, 2, 2.5, 3.9, 10, 57.3, 1e4])
@pytest.mark.parametrize("t", [-40, -3.1, -0.2, 0.0, 0.4, 1.7, 6.0, 55.0])
def test_t_tail_matches_scipy(t, df):
    assert stats.t_sf(t, df) == pytest.approx(scipy_stats.t.sf(t, df), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("new,ref", SETS)
def test_welch_matches_scipy(new, ref):
    ours = stats.welch_less(new, ref)
    theirs = scipy_stats.ttest_ind(new, ref, equal_var=False, alternative="less")
    assert ours.t == pytest.approx(-theirs.statistic, rel=1e-10) or (ours.t == 0 and theirs.statistic == 0)
    assert ours.p == pytest.approx(theirs.pvalue, rel=1e-9)
    assert ours.df == pytest.approx(theirs.df, rel=1e-10)


@pytest.mark.parametrize("new,ref", SETS)
def test_margin_test_is_welch_on_shifted_reference(new, ref):
    margin = 0.0013
    ours = stats.welch_less(new, ref, margin=margin)
    theirs = scipy_stats.ttest_ind(new, [r - margin for r in ref], equal_var=False, alternative="less")
    assert ours.p == pytest.approx(theirs.pvalue, rel=1e-9)


def test_against_a_fixed_score_is_one_sample():
    new = [1.05651, 1.05620, 1.05682]
    ours = stats.welch_less(new, 1.0611)
    theirs = scipy_stats.ttest_1samp(new, 1.0611, alternative="less")
    assert ours.p == pytest.approx(theirs.pvalue, rel=1e-9) and ours.df == 2


def test_rules_and_unit_conversion():
    bpt = 3.157357  # CaseOps val (challenge-spec 3.3): 0.005 nats = 0.00229 BPB
    new, ref = [1.0560, 1.0561, 1.0559], [1.0590, 1.0591, 1.0589]  # 0.0030 BPB better
    out = stats.summarize([stats.read_score(str(v)) for v in new], [stats.read_score(str(v)) for v in ref],
                          bytes_per_token=bpt)
    assert out["record"]["margin"] == pytest.approx(0.00229, abs=1e-5)
    assert out["progression"]["passes"] and out["record"]["passes"]
    assert out["mean_nats"] == pytest.approx(1.0560 * math.log(2) * bpt)
    close = [1.0580, 1.0581, 1.0579]  # 0.0010 BPB better: progression yes, record no
    out = stats.summarize([stats.read_score(str(v)) for v in close], [stats.read_score(str(v)) for v in ref],
                          bytes_per_token=bpt)
    assert out["progression"]["passes"] and not out["record"]["passes"]
    out = stats.summarize([stats.read_score(str(v)) for v in close], [stats.read_score(str(v)) for v in ref])
    assert out["record"]["passes"] is None  # no bytes/token: the nats rule cannot be decided


def _run_dir(tmp_path, name, bpb, bpt=2.4423, seed=1):
    d = tmp_path / name
    d.mkdir()
    loss = bpb * math.log(2) * bpt
    (d / "result.json").write_text(json.dumps({"final": {"val_bpb": bpb, "val_loss": loss, "bytes_per_token": bpt}}))
    (d / "config.json").write_text(json.dumps({"run": {"seed": seed}}))
    return str(d)


def test_reads_runs_and_checks_them(tmp_path):
    runs = [_run_dir(tmp_path, f"r{i}", v, seed=i) for i, v in enumerate([1.20, 1.21, 1.19])]
    out = stats.summarize([stats.read_score(r) for r in runs], score=1.25)
    assert out["seeds"] == [0, 1, 2] and out["bytes_per_token"] == pytest.approx(2.4423)
    assert out["std_bpb"] == pytest.approx(0.01)
    other = _run_dir(tmp_path, "other", 1.2, bpt=3.0)
    with pytest.raises(PgolfError, match="disagree on bytes_per_token"):
        stats.summarize([stats.read_score(r) for r in [*runs, other]])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "result.json").write_text(json.dumps({"final": {"val_bpb": 1.0, "val_loss": 5.0, "bytes_per_token": 2.0}}))
    with pytest.raises(PgolfError, match="differs from val_bpb"):
        stats.read_score(str(bad))
    with pytest.raises(PgolfError, match="neither a number"):
        stats.read_score(str(tmp_path / "missing"))
    with pytest.raises(PgolfError, match="at least 2"):
        stats.welch_less([1.0], 2.0)


def test_cli(tmp_path, capsys):
    from pgolf.cli import main

    runs = [_run_dir(tmp_path, f"r{i}", v) for i, v in enumerate([1.20, 1.21, 1.19])]
    assert main(["stats", *runs, "--against", "1.26", "1.25", "1.27", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["progression"]["passes"] and out["record"]["passes"] and out["n"] == 3
    assert main(["stats", *runs, "--score", "1.2"]) == 0
    text = capsys.readouterr().out
    assert "progression rule" in text and "fail" in text
    assert main(["stats", "abc"]) == 2
