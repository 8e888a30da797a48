"""`pgolf submit RUN_DIR...`: the records folder a challenge PR adds (challenge-spec §1.6).

From the seed runs of one recipe (run directories written by `pgolf train`) it writes:

- `train_gpt.py`: the packed script (`pgolf.export.pack`) whose embedded preset is the
  runs' own configuration, so `torchrun --nproc_per_node=8 train_gpt.py SEED=<s>` repeats
  a run (data paths from the config, or DATA_PATH / TOKENIZER_PATH);
- `submission.json`: author, github_id, name, date, track, val_bpb (mean), val_bpb_std,
  val_loss (mean nats/token) and its std, seeds, seed_results, bytes_total (the largest
  artifact + the packed code), bytes_code, bytes_model, the val set's token and byte
  counts, and the significance test against a reference when one is given (p_value,
  both rules of `pgolf.stats`);
- `train_seed<S>.log`: each run's log; `requirements.txt`: the third-party packages the
  packed code imports; `README.md`: the numbers and how to reproduce them.

Unless told not to, it then rescores every seed's artifact with the packed script itself
(`train_gpt.py eval`) in a clean venv that holds only requirements.txt (pgolf.submit.verify), and requires the run's
val_bpb and a total under the limit (`verification` in submission.json).

It refuses runs of different recipes or val sets, and a total at or over 16,000,000 bytes.
"""
from __future__ import annotations

import ast
import datetime
import json
import shutil
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from pgolf import stats
from pgolf.errors import PgolfError
from pgolf.fileio import atomic_write_bytes, atomic_write_json
from pgolf.export.pack import Packed, pack, recipe
from pgolf.export.trace import Closure
from pgolf.submit.verify import isolated_python, packed_eval, run_isolated

SIZE_LIMIT = 16_000_000


@dataclass(frozen=True)
class Run:
    path: Path
    config: dict
    result: dict
    seed: int


def read_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
        seed = int(config["run"]["seed"])
        result["final"]["val_bpb"], result["export"]["artifact_bytes"]
    except FileNotFoundError as e:
        raise PgolfError(f"{run_dir}: not a finished pgolf run ({Path(e.filename).name} missing)") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise PgolfError(f"{run_dir}: unreadable run files ({e!r})") from None
    if not (run_dir / "train.log").is_file():
        raise PgolfError(f"{run_dir}: no train.log")
    return Run(run_dir, config, result, seed)


def check_runs(runs: list[Run]) -> None:
    if not runs:
        raise PgolfError("pgolf submit needs at least one run directory")
    for run in runs:
        if run.result.get("within_cap") is False:  # the trainer warns; a record must not be past the cap
            raise PgolfError(f"{run.path}: its training (GPTQ Hessians and any calibration included) ended past the "
                             "wallclock cap (result.json: within_cap false), so it is not a valid record run; "
                             "raise export.reserve_seconds above the measured time (result.json: reserve)")
    first = recipe(runs[0].config)
    for run in runs[1:]:
        other = recipe(run.config)
        diff = [f"{s}.{k}" for s in first for k in first[s] if first[s][k] != other.get(s, {}).get(k)]
        if diff:
            raise PgolfError(f"{run.path} is not the same recipe as {runs[0].path}: {', '.join(diff)} differ")
    seeds = [r.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        raise PgolfError(f"runs repeat a seed ({seeds}); a submission reports distinct seeds")


def requirements(closure: Closure) -> list[str]:
    """Third-party distributions the packed code imports (top-level names, mapped to their packages)."""
    names = set()
    for path in closure.modules.values():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    names = {n for n in names if n not in sys.stdlib_module_names and not n.startswith("pgolf")}
    dists = metadata.packages_distributions()
    return sorted({d for n in names for d in dists.get(n, [n])} | {"brotli"})  # brotli: the wrapper itself


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed here"


@dataclass(frozen=True)
class SubmitOptions:
    out_dir: Path
    author: str
    github_id: str
    name: str
    track: str = "10min_16mb"
    hardware: str = ""
    against: list[str] | None = None
    score: float | None = None
    verify: bool = True  # rescore every seed's artifact with the packed script in a process without pgolf


def submission(runs: list[Run], packed: Packed, opts: SubmitOptions) -> dict:
    scores = [stats.Score(str(r.path), r.result["final"]["val_bpb"], r.result["final"]["val_loss"],
                          r.result["final"]["bytes_per_token"], r.seed) for r in runs]
    ref = [stats.read_score(x) for x in opts.against] if opts.against else None
    summary = stats.summarize(scores, ref, opts.score)
    finals = [r.result["final"] for r in runs]
    if len({(f["token_count"], f["byte_count"]) for f in finals}) != 1:
        raise PgolfError("the runs were scored on different val sets (token or byte counts differ)")
    models = [r.result["export"]["artifact_bytes"] for r in runs]
    total = max(models) + packed.code_bytes
    if total >= SIZE_LIMIT:
        raise PgolfError(f"bytes_total {total:,} (artifact {max(models):,} + code {packed.code_bytes:,}) is not under "
                         f"{SIZE_LIMIT:,}")
    losses = [f["val_loss"] for f in finals]
    out = {
        "author": opts.author, "github_id": opts.github_id, "name": opts.name,
        "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat(), "track": opts.track,
        "val_bpb": summary["mean_bpb"], "val_bpb_std": summary["std_bpb"],
        "val_loss": stats.mean_std(losses)[0], "val_loss_std": stats.mean_std(losses)[1],
        "seeds": [r.seed for r in runs],
        "seed_results": {str(r.seed): {"val_bpb": f["val_bpb"], "val_loss": f["val_loss"], "steps": r.result["steps"],
                                       "train_time_ms": r.result["train_time_ms"], "artifact_bytes": m,
                                       "bytes_total": m + packed.code_bytes}
                         for r, f, m in zip(runs, finals, models)},
        "bytes_total": total, "bytes_code": packed.code_bytes, "bytes_model": max(models),
        "val_tokens": finals[0]["token_count"], "val_bytes": finals[0]["byte_count"],
        "bytes_per_token": finals[0]["bytes_per_token"],
        "hardware": opts.hardware or _hardware(runs[0]), "pytorch_version": _version("torch"),
    }
    if "progression" in summary:
        out["p_value"] = summary["progression"]["p"]
        out["significance"] = {"reference": summary["reference"], "progression_rule": summary["progression"],
                               "record_rule": summary["record"]}
    else:
        out["p_value"] = None
        out["significance"] = "no reference given (pgolf submit --against RUN... or --score BPB)"
    return out


def _hardware(run: Run) -> str:
    metrics = run.path / "metrics.jsonl"
    for line in metrics.read_text(encoding="utf-8").splitlines() if metrics.is_file() else []:
        event = json.loads(line)
        if event.get("event") == "setup":
            return f"{event.get('world_size')}x {event.get('device')}"
    return "unknown"


def readme(sub: dict, packed: Packed, reqs: list[str]) -> str:
    rows = "\n".join(f"| {s} | {r['val_bpb']:.8f} | {r['val_loss']:.8f} | {r['steps']} | {r['bytes_total']:,} |"
                     for s, r in sub["seed_results"].items())
    sig = (f"One-sided Welch p = {sub['p_value']:.4g} against the reference "
           f"(progression rule p < 0.25: {'met' if sub['significance']['progression_rule']['passes'] else 'not met'}; "
           f"record rule 0.005 nats at p < 0.01: {sub['significance']['record_rule']['passes']})."
           if sub["p_value"] is not None else "No significance test: no reference score was given.")
    return f"""# {sub['name']}

val_bpb **{sub['val_bpb']:.8f}** (std {sub['val_bpb_std']:.8f}, {len(sub['seeds'])} seeds), val_loss {sub['val_loss']:.8f}
nats/token, on {sub['val_tokens']:,} val targets / {sub['val_bytes']:,} bytes ({sub['bytes_per_token']:.6f} bytes/token).
Hardware: {sub['hardware']}.

| seed | val_bpb | val_loss | steps | bytes_total |
|---|---:|---:|---:|---:|
{rows}

{sig}

## Size

bytes_total {sub['bytes_total']:,} = artifact {sub['bytes_model']:,} + code {sub['bytes_code']:,}. The code is
`train_gpt.py`: {len(packed.files)} files ({packed.source_bytes:,} bytes of source) that the training entry imports,
minified ({packed.minified_bytes:,} bytes), brotli-11 compressed and base85-encoded in a two-line exec wrapper.

## Reproduce

    pip install -r requirements.txt
    torchrun --standalone --nproc_per_node=8 train_gpt.py SEED=<seed>

The recipe is the configuration embedded in `train_gpt.py`; `key=value` arguments and the challenge's environment
variables (DATA_PATH, TOKENIZER_PATH, ...) override it. Requirements: {', '.join(reqs)}.
"""


def verify_artifacts(runs: list[Run], script: Path, code_bytes: int, reqs: list[str]) -> dict:
    """Score each seed's artifact file with the packed script (`train_gpt.py eval`) in a fresh process of a clean
    venv holding only `reqs` (pgolf not importable); its val_bpb must equal the run's (relative 1e-9: a GPU may
    not repeat its sums bitwise; on a CPU they are equal) and artifact + code stay under the limit."""
    with isolated_python(reqs) as (python, missing):
        seeds = {str(run.seed): _verify_run(run, python, script, code_bytes) for run in runs}
    return {"method": "train_gpt.py eval ARTIFACT by `VENV/bin/python -I` in a clean venv holding only "
                      "requirements.txt's distributions and their dependencies (pgolf not importable)",
            "not_installed_here": missing, "seeds": seeds}


def _verify_run(run: Run, python: Path, script: Path, code_bytes: int) -> dict:
    artifact = run.path / Path(run.result["export"]["path"]).name
    ev = run.config["eval"]
    # data and tokenizer as the run saw them (a relative path is the run's cwd's, not the records folder's)
    args = ["eval", str(artifact.resolve()), f"stride={ev['stride']}", f"batch_tokens={ev['batch_tokens']}",
            f"data={Path(run.config['data']['path']).resolve()}",
            f"tokenizer={Path(run.config['data']['tokenizer']).resolve()}"]
    if run.config["run"]["device"] != "auto":
        args.append(f"device={run.config['run']['device']}")
    got = packed_eval(run_isolated(python, script, args, cwd=script.parent))
    want = run.result["final"]["val_bpb"]
    total = artifact.stat().st_size + code_bytes
    if abs(got["val_bpb"] - want) > 1e-9 * want or got["token_count"] != run.result["final"]["token_count"]:
        raise PgolfError(f"{artifact}: the packed script scores val_bpb {got['val_bpb']!r}, the run logged {want!r}")
    if total >= SIZE_LIMIT:
        raise PgolfError(f"{artifact}: {artifact.stat().st_size:,} B + code {code_bytes:,} B is not under {SIZE_LIMIT:,}")
    return {"val_bpb": got["val_bpb"], "logged_val_bpb": want, "bytes_total": total,
            "eval_seconds": got["eval_seconds"]}


def write_submission(run_dirs: list[str | Path], opts: SubmitOptions) -> dict:
    runs = sorted((read_run(d) for d in run_dirs), key=lambda r: r.seed)
    check_runs(runs)
    out = Path(opts.out_dir)
    if out.exists() and any(out.iterdir()):
        raise PgolfError(f"{out} exists and is not empty; choose a new records folder")
    packed = pack(runs[0].config)  # the same script a run with export.code_bytes="wrapped" counts
    sub = submission(runs, packed, opts)
    reqs = requirements(packed.closure)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "train_gpt.py", packed.script)
    if opts.verify:
        sub["verification"] = verify_artifacts(runs, out / "train_gpt.py", packed.code_bytes, reqs)
    atomic_write_json(out / "submission.json", sub)
    atomic_write_bytes(out / "requirements.txt", ("".join(f"{r}\n" for r in reqs) + "# versions used: " + ", ".join(
        f"{r} {_version(r)}" for r in reqs) + "\n").encode("utf-8"))
    for run in runs:
        shutil.copyfile(run.path / "train.log", out / f"train_seed{run.seed}.log")
    atomic_write_bytes(out / "README.md", readme(sub, packed, reqs).encode("utf-8"))
    return sub
