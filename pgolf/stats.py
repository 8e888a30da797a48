"""`pgolf stats`: multi-seed means and the significance tests the challenge applies.

A run set is a list of per-seed scores: result.json files written by `pgolf train`
(run directories or the files themselves) or plain val_bpb numbers. Against a given
score or another run set it gives the one-sided Welch t-test that the candidate is
lower, and both rules in use:

- record rule (challenge-spec §1.6): better by at least 0.005 nats per token at p < 0.01,
  i.e. H0: mean_new >= mean_ref − 0.005 nats, rejected at p < 0.01;
- progression rule (frontier-spec F0): one-sided Welch p < 0.25 against the previous
  frontier row, no margin.

BPB and nats per token differ by a constant for one val set and tokenizer:
nats = bpb · ln 2 · bytes_per_token (the §3.3 invariant). The runs' measured
bytes_per_token converts; for plain numbers it must be given. A t statistic is scale
invariant, so the progression p-value is the same in either unit; the record rule's
margin is defined in nats and is converted once.

The Student t tail is computed here (regularised incomplete beta by Lentz's continued
fraction) so the tool needs no scipy; tests check it against scipy's Welch test.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from pgolf.errors import PgolfError

RECORD_MARGIN_NATS = 0.005
RECORD_ALPHA = 0.01
PROGRESSION_ALPHA = 0.25
LN2 = math.log(2)


# -- Student t tail -----------------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
            last = d * c
        if abs(last - 1.0) < 1e-15:
            return h
    raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x={x} outside [0, 1]")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` (real, > 0) degrees of freedom."""
    if df <= 0 or math.isnan(df):
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


# -- samples and tests --------------------------------------------------------------------

def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1), as the records report them."""
    n = len(values)
    if n == 0:
        raise PgolfError("a run set needs at least one score")
    m = math.fsum(values) / n
    return m, (math.sqrt(math.fsum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan)


@dataclass(frozen=True)
class TTest:
    t: float
    df: float
    p: float  # one-sided: H1 is "candidate lower by more than margin"
    diff: float  # mean_ref − mean_new (positive = candidate better)
    margin: float


def welch_less(new: list[float], ref: list[float] | float, margin: float = 0.0) -> TTest:
    """One-sided Welch test of H1: mean(new) < mean(ref) − margin.

    `ref` may be a run set (Welch–Satterthwaite degrees of freedom) or a fixed score (a
    one-sample t test, n − 1 degrees of freedom: the reference's own variance is unknown).
    """
    if len(new) < 2:
        raise PgolfError(f"a t test needs at least 2 candidate seeds, got {len(new)}")
    m1, s1 = mean_std(new)
    v1 = s1 * s1 / len(new)
    if isinstance(ref, (int, float)):
        m2, v2, df = float(ref), 0.0, float(len(new) - 1)
    else:
        if len(ref) < 2:
            raise PgolfError(f"a reference run set needs at least 2 seeds, got {len(ref)} (give --score for one number)")
        m2, s2 = mean_std(ref)
        v2 = s2 * s2 / len(ref)
        den = v1 * v1 / (len(new) - 1) + v2 * v2 / (len(ref) - 1)
        df = (v1 + v2) ** 2 / den if den > 0 else math.inf
    diff = m2 - m1
    se = math.sqrt(v1 + v2)
    if se == 0.0:
        t = math.inf if diff > margin else (-math.inf if diff < margin else 0.0)
        return TTest(t, df, 0.0 if diff > margin else 1.0, diff, margin)
    t = (diff - margin) / se
    p = t_sf(t, df) if math.isfinite(df) else 0.5 * math.erfc(t / math.sqrt(2))
    return TTest(t, df, p, diff, margin)


# -- run sets -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Score:
    source: str
    val_bpb: float
    val_loss: float | None  # nats per token, when the run recorded it
    bytes_per_token: float | None
    seed: int | None


def _result_path(item: str) -> Path:
    path = Path(item)
    return path / "result.json" if path.is_dir() else path


def read_score(item: str) -> Score:
    """A per-seed score from a run directory, a result.json, or a val_bpb number."""
    try:
        value = float(item)
    except ValueError:
        value = None
    if value is not None:
        if not math.isfinite(value) or value <= 0:
            raise PgolfError(f"score {item!r} is not a positive finite val_bpb")
        return Score(item, value, None, None, None)
    path = _result_path(item)
    if not path.is_file():
        raise PgolfError(f"{item}: neither a number nor a run directory / result.json ({path} does not exist)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        final = data["final"]
        bpb, loss, bpt = float(final["val_bpb"]), float(final["val_loss"]), float(final["bytes_per_token"])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PgolfError(f"{path}: not valid JSON ({e})") from None
    except (KeyError, TypeError, ValueError) as e:
        raise PgolfError(f"{path}: no final.val_bpb / val_loss / bytes_per_token ({e!r}); not a pgolf result.json") from None
    if abs(loss / (LN2 * bpt) - bpb) > 1e-9 * bpb:
        raise PgolfError(f"{path}: val_loss/(ln2·bytes_per_token) = {loss / (LN2 * bpt):.8f} differs from val_bpb {bpb:.8f}")
    return Score(str(path), bpb, loss, bpt, _seed_of(path.parent))


def _seed_of(run_dir: Path) -> int | None:
    cfg = run_dir / "config.json"
    try:
        return int(json.loads(cfg.read_text(encoding="utf-8"))["run"]["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def bytes_per_token_of(scores: list[Score], given: float | None, label: str) -> float | None:
    """The set's measured bytes/token (all runs must agree: one val set), or the given one."""
    measured = {round(s.bytes_per_token, 9) for s in scores if s.bytes_per_token is not None}
    if len(measured) > 1:
        raise PgolfError(f"{label}: runs disagree on bytes_per_token {sorted(measured)}: not the same val set")
    if measured:
        bpt = measured.pop()
        if given is not None and abs(given - bpt) > 1e-6 * bpt:
            raise PgolfError(f"--bytes-per-token {given} differs from the {label} runs' measured {bpt}")
        return bpt
    return given


def summarize(new: list[Score], ref: list[Score] | None = None, score: float | None = None,
              bytes_per_token: float | None = None) -> dict:
    """Everything `pgolf stats` prints, as a dict (BPB throughout; nats where bytes/token is known)."""
    if ref is not None and score is not None:
        raise PgolfError("give a reference run set or --score, not both")
    bpt = bytes_per_token_of(new, bytes_per_token, "candidate")
    ref_bpt = bytes_per_token_of(ref, None, "reference") if ref else None
    values = [s.val_bpb for s in new]
    mean, std = mean_std(values)
    out: dict = {"n": len(values), "val_bpb": values, "mean_bpb": mean, "std_bpb": std,
                 "seeds": [s.seed for s in new], "bytes_per_token": bpt}
    if bpt is not None:
        nats = [v * LN2 * bpt for v in values]
        out.update(val_loss=nats, mean_nats=mean_std(nats)[0], std_nats=mean_std(nats)[1])
    if ref is None and score is None:
        return out
    ref_values: list[float] | float = [s.val_bpb for s in ref] if ref is not None else float(score)
    out["reference"] = ({"n": len(ref_values), "val_bpb": ref_values, "mean_bpb": mean_std(ref_values)[0],
                         "std_bpb": mean_std(ref_values)[1], "bytes_per_token": ref_bpt}
                        if isinstance(ref_values, list) else {"score_bpb": ref_values})
    progression = welch_less(values, ref_values)
    out["progression"] = {**asdict(progression), "alpha": PROGRESSION_ALPHA, "passes": progression.p < PROGRESSION_ALPHA}
    if bpt is None:
        out["record"] = {"passes": None, "why": "bytes per token unknown: give run dirs or --bytes-per-token"}
    else:
        margin = RECORD_MARGIN_NATS / (LN2 * bpt)  # 0.005 nats in BPB on this val set
        record = welch_less(values, ref_values, margin=margin)
        out["record"] = {**asdict(record), "margin_nats": RECORD_MARGIN_NATS, "alpha": RECORD_ALPHA,
                         "passes": record.p < RECORD_ALPHA}
    return out


# -- CLI ------------------------------------------------------------------------------------

def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("stats", help="multi-seed mean/std and the challenge's one-sided Welch tests",
                       description="Runs are run directories, result.json files or val_bpb numbers.")
    s.add_argument("runs", nargs="+", help="candidate runs (one per seed)")
    s.add_argument("--against", nargs="+", default=None, metavar="RUN", help="reference run set (e.g. the SOTA's seeds)")
    s.add_argument("--score", type=float, default=None, help="reference val_bpb (a fixed score)")
    s.add_argument("--bytes-per-token", type=float, default=None,
                   help="val bytes/token, to convert plain numbers to nats (runs carry their own)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_stats)


def _stats(args) -> None:
    new = [read_score(r) for r in args.runs]
    ref = [read_score(r) for r in args.against] if args.against else None
    out = summarize(new, ref, args.score, args.bytes_per_token)
    print(json.dumps(out, indent=2) if args.json else format_summary(out))


def _verdict(test: dict) -> str:
    if test["passes"] is None:
        return f"n/a ({test['why']})"
    return f"p={test['p']:.4g} (t={test['t']:.3f}, df={test['df']:.2f}) -> {'PASS' if test['passes'] else 'fail'}"


def format_summary(out: dict) -> str:
    lines = [f"{out['n']} runs: val_bpb " + ", ".join(f"{v:.6f}" for v in out["val_bpb"]),
             f"mean {out['mean_bpb']:.6f}  std {out['std_bpb']:.6f} (sample, n-1)"]
    if "mean_nats" in out:
        lines.append(f"val_loss mean {out['mean_nats']:.6f} nats/token  std {out['std_nats']:.6f}"
                     f"  (bytes/token {out['bytes_per_token']:.6f})")
    ref = out.get("reference")
    if ref is None:
        return "\n".join(lines)
    if "score_bpb" in ref:
        lines.append(f"reference score {ref['score_bpb']:.6f} BPB")
    else:
        lines.append(f"reference {ref['n']} runs: mean {ref['mean_bpb']:.6f}  std {ref['std_bpb']:.6f}")
    lines.append(f"difference {out['progression']['diff']:+.6f} BPB (reference - candidate)")
    lines.append(f"progression rule (one-sided Welch, p < {PROGRESSION_ALPHA}): {_verdict(out['progression'])}")
    lines.append(f"record rule (>= {RECORD_MARGIN_NATS} nats at p < {RECORD_ALPHA}): {_verdict(out['record'])}")
    return "\n".join(lines)
