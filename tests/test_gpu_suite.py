"""benchmarks/gpu_suite.py: the CPU dry run (the same code path as on a GPU), the budget's
priority order, and that every correctness check can fail."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile

import pytest
import torch

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from suite_core import Budget, Check, Context, Part, compare, run_check, run_parts  # noqa: E402


def run_suite(out, *args, timeout=170):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("TRITON_INTERPRET", None)  # the suite sets it itself, before any kernel import
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--out", str(out), "--dry-run",
                           *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)


@pytest.mark.slow
def test_dry_run_writes_both_files_and_every_part_runs(tmp_path):
    pytest.importorskip("triton")
    t0 = time.monotonic()
    r = run_suite(tmp_path, "--seed", "3")
    seconds = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-3000:]
    results = json.loads((tmp_path / "suite.json").read_text())
    # its own 110 s budget keeps it under 2 minutes (about 70 s on an idle 2-core machine); the
    # process also pays the interpreter's start and the imports
    assert results["meta"]["elapsed_s"] <= 110 and seconds < 150, (results["meta"], seconds)
    markdown = (tmp_path / "suite.md").read_text()
    assert [p["part"] for p in results["parts"]] == ["environment", "correctness", "micro", "train", "eval"]
    assert all(p["status"] == "done" for p in results["parts"]), results["parts"]
    checks = [c for c in results["correctness"] if "passed" in c]
    assert {c["op"] for c in checks} == {"softcapped_ce", "linear_softcapped_ce", "newton_schulz", "int6_matmul",
                                         "gdn_chunk_scan", "leaky_relu2_mlp"}
    assert {c["mode"] for c in checks} >= {"eager", "compiled", "kernel"}
    assert all(c["passed"] for c in checks), [c for c in checks if not c["passed"]]
    skipped = [row for sec in ("micro", "train", "eval") for row in results[sec] if row.get("status") == "skipped"]
    assert [row["item"] for row in skipped] == ["reference train_gpt.py"], skipped  # nothing else ran short
    assert {row["provider"] for row in results["micro"] if "ms" in row} >= {"pgolf", "eager fp32", "torch.compile"}
    trained = [row for row in results["train"] if "ms_per_step" in row]
    assert [row["item"] for row in trained][:1] == ["pgolf baseline"] and len(trained) >= 2  # + the gdn preset
    assert results["eval"][0]["tokens_per_s"] > 0
    for title in ("## Targets", "## Correctness", "## Microbenchmarks", "## Training", "## Eval", "## Parts"):
        assert title in markdown
    assert "DRY RUN" in markdown


def test_a_tiny_budget_skips_the_later_parts_and_still_writes_both_files(tmp_path):
    r = run_suite(tmp_path, "--budget", "3", "--parts", "environment,correctness,micro", timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    parts = json.loads((tmp_path / "suite.json").read_text())["parts"]
    assert [(p["part"], p["status"]) for p in parts] == [("environment", "done"), ("correctness", "skipped"),
                                                         ("micro", "skipped")]
    assert "budget" in parts[1]["note"] and (tmp_path / "suite.md").is_file()


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_budget_runs_parts_by_priority_and_skips_what_no_longer_fits():
    clock = FakeClock()
    ctx = Context(torch.device("cpu"), True, Budget(10, clock))
    ran = []

    def part(name, cost):
        def run(_):
            ran.append(name)
            clock.now += cost
        return run

    parts = [Part("first", 4, part("first", 4)), Part("second", 4, part("second", 4)),
             Part("third", 4, part("third", 4)), Part("fourth", 3, part("fourth", 3))]
    run_parts(parts, ctx)
    assert ran == ["first", "second"]
    assert [(p["part"], p["status"]) for p in ctx.results["parts"]] == [
        ("first", "done"), ("second", "done"), ("third", "skipped"), ("fourth", "skipped")]
    assert ctx.results["parts"][2]["note"] == "budget: 2 s left, needs ~4 s"


def test_a_part_that_raises_is_recorded_and_the_next_one_runs():
    ctx = Context(torch.device("cpu"), True, Budget(100))

    def boom(_):
        raise RuntimeError("kernel exploded")

    run_parts([Part("bad", 1, boom), Part("good", 1, lambda c: c.record("x", {"ok": 1}))], ctx)
    assert [p["status"] for p in ctx.results["parts"]] == ["failed", "done"]
    assert "kernel exploded" in ctx.results["parts"][0]["note"]


def test_items_inside_a_part_are_skipped_with_a_note():
    clock = FakeClock()
    ctx = Context(torch.device("cpu"), True, Budget(10, clock))
    assert ctx.allows("micro", "small op", 5)
    clock.now = 8
    assert not ctx.allows("micro", "big op", 5)
    assert ctx.results["micro"] == [{"item": "big op", "status": "skipped", "note": "budget: 2 s left, needs ~5 s"}]


def dry_context():
    ctx = Context(torch.device("cpu"), True, Budget(1000))
    ctx.options.update(seed=5, compile_backend="aot_eager")
    return ctx


def all_checks(monkeypatch):
    import pgolf.ops.backend
    from suite_ops import OPS

    monkeypatch.setattr(pgolf.ops.backend, "use_triton", lambda t: True)  # build the kernel-level checks too
    ctx = dry_context()
    return ctx, [c for op in OPS for c in op.checks(ctx)]


def planted(reference):
    """A wrong kernel: the truth off by 1% of its RMS in every element."""
    def run():
        return {k: v + 1e-2 * v.double().pow(2).mean().sqrt().to(v.dtype) for k, v in reference().items()}
    return run


def test_every_correctness_check_fails_on_a_planted_wrong_output(monkeypatch):
    ctx, checks = all_checks(monkeypatch)
    assert {c.op for c in checks} == {"softcapped_ce", "linear_softcapped_ce", "newton_schulz", "int6_matmul",
                                      "gdn_chunk_scan", "leaky_relu2_mlp"}
    assert {c.mode for c in checks} == {"eager", "compiled", "kernel"}
    for check in checks:
        wrong = Check(check.op, check.name, check.mode, planted(check.reference), check.reference, check.tol,
                      check.metric)
        row = run_check(wrong, ctx, poison_bytes=0)
        assert row["passed"] is False, (check.op, check.name, row)
        truth = Check(check.op, check.name, check.mode, check.reference, check.reference, check.tol, check.metric)
        assert run_check(truth, ctx, poison_bytes=0)["passed"] is True, (check.op, check.name)


def test_unwritten_outputs_and_raising_kernels_fail():
    ref = {"y": torch.randn(8, 4, dtype=torch.float64)}
    poisoned = {"y": ref["y"].clone()}
    poisoned["y"][3, 1] = float("nan")  # one element the kernel never wrote
    ok, errors, note = compare(poisoned, ref, {"*": 1e-3})
    assert not ok and "non-finite" in note
    ok, _, note = compare({"y": ref["y"][:4]}, ref, {"*": 1e-3})
    assert not ok and "shape" in note

    def broken():
        raise RuntimeError("illegal memory access")
    row = run_check(Check("op", "c", "eager", broken, lambda: ref, {"*": 1e-3}), dry_context(), 0)
    assert row["passed"] is False and "illegal memory access" in row["note"]


def test_reference_log_parsing_reads_the_steady_step_time():
    from suite_train import steady_ms

    log = "\n".join(f"step:{s}/12 train_loss:6.9 train_time:{t}ms step_avg:{t / s:.2f}ms"
                    for s, t in [(1, 900), (2, 1300), (3, 1700), (4, 2100), (12, 5300)])
    assert steady_ms(log) == (400.0, 9)
    with pytest.raises(ValueError, match="step lines"):
        steady_ms("no steps here")


def test_presets_timed_are_the_baseline_and_every_larger_one():
    from suite_train import param_count, presets_to_time

    names = [n for n, _ in presets_to_time(None)]
    assert names[0] == "baseline" and "smoke" not in names
    assert all(param_count(n) >= param_count("baseline") for n in names)


def test_carry_wheels_reads_requirements_and_checks_device_versions(tmp_path):
    from carry_wheels import install_line, req_name, requirements, version_ok

    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("demo-1.0.dist-info/METADATA", "Name: demo\nRequires-Dist: fla-core==0.6.0\n"
                   "Requires-Dist: torch>=2.7.0; extra == \"cuda\"\nRequires-Dist: transformers<6,>=5.6.2\n")
    assert requirements(wheel) == ["fla-core==0.6.0", "transformers<6,>=5.6.2"]
    assert req_name("fla_core==0.6.0") == "fla-core"
    assert version_ok("transformers<6,>=5.6.2", "5.17.0") == "ok"
    assert "needs" in version_ok("torch>=2.12", "2.11.0")
    line = install_line(".carry/wheels")
    assert "--no-index" in line and "--target /tmp/site" in line and ".carry/wheels/*.whl" in line


FAKE_REFERENCE = '''
import glob, os
data = os.environ["DATA_PATH"]
assert glob.glob(os.path.join(data, "fineweb_train_*.bin")) and glob.glob(os.path.join(data, "fineweb_val_*.bin"))
assert os.environ["VOCAB_SIZE"] == "1024" and os.environ["MAX_WALLCLOCK_SECONDS"] == "0"
n = int(os.environ["ITERATIONS"])
for s in range(1, n + 1):
    print(f"step:{s}/{n} train_loss:6.9 train_time:{1000 + 250 * s}ms step_avg:{(1000 + 250 * s) / s:.2f}ms")
'''


def test_the_reference_runs_on_synthetic_shards_and_is_read_back(tmp_path):
    from suite_train import reference_row

    script, tok = tmp_path / "train_gpt.py", tmp_path / "sp1024.model"
    script.write_text(FAKE_REFERENCE)
    tok.write_bytes(b"not read by the fake")
    ctx = dry_context()
    ctx.options.update(reference=script, reference_tokenizer=tok)
    ctx.results["train"] = [{"item": "pgolf baseline", "ms_per_step": 200.0}]
    reference_row(ctx)
    row = ctx.results["train"][-1]
    assert row["ms_per_step"] == 250.0 and row["pgolf_baseline_ratio"] == 0.8 and row["met"] is True
