"""pgolf submit: the import closure, the packed script (format, and val_bpb reproduced without the
installed package), the records folder."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

from conftest import TINY
from pgolf.errors import PgolfError
from pgolf.submit.pack import WRAPPER_HEAD, pack, unpack_program
from pgolf.submit.records import SubmitOptions, write_submission
from pgolf.export.trace import import_closure

pytest.importorskip("python_minifier")


@pytest.fixture(scope="module")
def packed_smoke():
    return pack("smoke")


def test_closure_is_the_training_entry_and_nothing_else():
    mods = import_closure().modules
    assert {"pgolf.train.trainer", "pgolf.config", "pgolf.export.export", "pgolf.metric.bpb", "pgolf.eval.scoring"} <= set(mods)
    assert {"pgolf_kernels.gdn_state", "pgolf_kernels.newton_schulz"} <= set(mods)  # loaded by name (kernel_module)
    for absent in ("pgolf.cli", "pgolf.demo", "pgolf.stats", "pgolf.check.harness", "pgolf.submit.pack",
                   "pgolf.data.prepare", "pgolf.data.download", "pgolf.eval.commands", "pgolf.data.overlap"):
        assert absent not in mods
    assert all(f"{'.'.join(m.split('.')[:i])}" in mods for m in mods for i in range(1, len(m.split("."))))


def test_packed_script_format(packed_smoke):
    text = packed_smoke.script.decode("ascii")
    lines = text.splitlines()
    assert len(lines) == 2 and lines[0] + "\n" == WRAPPER_HEAD and packed_smoke.code_bytes == len(packed_smoke.script)
    program = unpack_program(packed_smoke.script)
    files = ast.literal_eval(program.split("\n")[1][2:])
    assert set(files) == set(packed_smoke.files) and "pgolf/configs/smoke.toml" in files
    for name, source in files.items():
        if name.endswith(".py"):
            compile(source, name, "exec")  # minified sources are valid Python
    assert packed_smoke.minified_bytes < packed_smoke.source_bytes


def _package_env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


@pytest.mark.slow
def test_packed_script_reproduces_the_package_val_bpb(tmp_path, tiny_data, packed_smoke):
    """The same run, by `python -m pgolf train` and by the packed script in a process that cannot import pgolf."""
    from pgolf.submit.verify import packed_val_bpb, run_isolated

    data, tok = tiny_data
    args = [*TINY, f"data.path={data}", f"data.tokenizer={tok}", f"run.out_dir={tmp_path}", "run.seed=7"]
    env = {k: v for k, v in _package_env().items() if not k.startswith(("SEED", "ITERATIONS", "DATA_PATH"))}
    pkg = subprocess.run([sys.executable, "-m", "pgolf", "train", "--config", "smoke", *args, "run.name=pkg"],
                         capture_output=True, text=True, env=env, timeout=1800)
    assert pkg.returncode == 0, pkg.stderr[-2000:]
    script = tmp_path / "train_gpt.py"
    script.write_bytes(packed_smoke.script)
    proc = run_isolated(script, [*args, "run.name=packed"], cwd=tmp_path, env=env)
    bpb = packed_val_bpb(proc)
    expected = json.loads((tmp_path / "pkg" / "result.json").read_text())["final"]["val_bpb"]
    assert f"{bpb:.8f}" == f"{expected:.8f}"
    packed = json.loads((tmp_path / "packed" / "result.json").read_text())["final"]
    assert packed["val_bpb"] == expected  # bitwise: the same code path, minified


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory, tiny_data):
    from conftest import tiny_config
    from pgolf.train.trainer import run_training

    out = tmp_path_factory.mktemp("runs")
    return [run_training(tiny_config(tiny_data, out, f"run.seed={s}", f"run.name=s{s}")).run_dir for s in (1, 2)]


def test_records_folder(tmp_path, seed_runs):
    sub = write_submission(seed_runs, SubmitOptions(tmp_path / "rec", "A. Author", "aauthor", "Tiny test", score=9.0,
                                                    verify=False))
    files = sorted(p.name for p in (tmp_path / "rec").iterdir())
    assert files == ["README.md", "requirements.txt", "submission.json", "train_gpt.py", "train_seed1.log",
                     "train_seed2.log"]
    on_disk = json.loads((tmp_path / "rec" / "submission.json").read_text())
    assert on_disk == json.loads(json.dumps(sub))
    results = [json.loads((d / "result.json").read_text()) for d in seed_runs]
    bpbs = [r["final"]["val_bpb"] for r in results]
    assert sub["seeds"] == [1, 2] and sub["val_bpb"] == pytest.approx(sum(bpbs) / 2)
    assert sub["seed_results"]["2"]["val_bpb"] == bpbs[1]
    code = (tmp_path / "rec" / "train_gpt.py").stat().st_size
    assert sub["bytes_code"] == code and sub["bytes_total"] == max(r["export"]["artifact_bytes"] for r in results) + code
    assert 0 <= sub["p_value"] < 0.01 and sub["significance"]["progression_rule"]["passes"]
    program = unpack_program((tmp_path / "rec" / "train_gpt.py").read_bytes())
    assert "pgolf/configs/submission.toml" in program  # the runs' own recipe is the packed preset
    reqs = (tmp_path / "rec" / "requirements.txt").read_text()
    assert "torch" in reqs and "brotli" in reqs and "pgolf" not in reqs.split("#")[0]
    assert "bytes_total" in (tmp_path / "rec" / "README.md").read_text() and "verification" not in sub


@pytest.mark.slow
def test_records_folder_verified_by_the_packed_script(tmp_path, seed_runs):
    sub = write_submission(seed_runs, SubmitOptions(tmp_path / "rec", "A. Author", "aauthor", "Tiny test"))
    assert sub["p_value"] is None
    for seed, v in sub["verification"]["seeds"].items():  # rescored by the packed script without pgolf
        assert v["val_bpb"] == v["logged_val_bpb"] == sub["seed_results"][seed]["val_bpb"]
        assert v["bytes_total"] == sub["seed_results"][seed]["bytes_total"] < 16_000_000


def test_records_folder_refuses_bad_input(tmp_path, seed_runs):
    opts = SubmitOptions(tmp_path / "rec", "a", "b", "c", verify=False)
    with pytest.raises(PgolfError, match="repeat a seed"):
        write_submission([seed_runs[0], seed_runs[0]], opts)
    cfg = json.loads((seed_runs[1] / "config.json").read_text())
    other = tmp_path / "other"
    other.mkdir()
    for name in ("result.json", "train.log"):
        (other / name).write_bytes((seed_runs[1] / name).read_bytes())
    cfg["run"]["seed"], cfg["train"]["iterations"] = 99, 9
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PgolfError, match="train.iterations differ"):
        write_submission([seed_runs[0], other], SubmitOptions(tmp_path / "rec2", "a", "b", "c"))
    with pytest.raises(PgolfError, match="not a finished pgolf run"):
        write_submission([tmp_path], SubmitOptions(tmp_path / "rec3", "a", "b", "c"))
