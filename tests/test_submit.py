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
from pgolf.config import from_dict, load_config
from pgolf.export import trace
from pgolf.export.code_size import count_code_bytes
from pgolf.export.pack import WRAPPER_HEAD, pack, unpack_files
from pgolf.export.trace import import_closure
from pgolf.submit.records import SubmitOptions, requirements, write_submission

GDN_ONLY = {"pgolf.model.gdn", "pgolf.ops.fla_gdn", "pgolf.ops.gdn", "pgolf_kernels.gdn_chunk", "pgolf_kernels.gdn_state"}
PACKER = {"pgolf.export.trace", "pgolf.export.pack", "pgolf.export.minify"}


def preset(name, *overrides):
    return load_config(name, list(overrides), env={})


@pytest.fixture(scope="module")
def packed_smoke():
    return pack(preset("smoke"))


def test_closure_is_the_training_entry_and_nothing_else():
    mods = import_closure().modules  # no config: every option on
    assert {"pgolf.train.trainer", "pgolf.config", "pgolf.export.export", "pgolf.metric.bpb", "pgolf.eval.scoring"} <= set(mods)
    assert {"pgolf_kernels.gdn_state", "pgolf_kernels.newton_schulz"} <= set(mods)  # loaded by name (kernel_module)
    for absent in ("pgolf.cli", "pgolf.demo", "pgolf.stats", "pgolf.check.harness", "pgolf.submit.records",
                   "pgolf.data.prepare", "pgolf.data.download", "pgolf.eval.commands", "pgolf.data.overlap",
                   "pgolf.train.commands"):
        assert absent not in mods
    assert all(f"{'.'.join(m.split('.')[:i])}" in mods for m in mods for i in range(1, len(m.split("."))))


def test_closure_per_preset_holds_only_what_its_options_run():
    smoke = set(import_closure(preset("smoke")).modules)
    assert not smoke & (GDN_ONLY | PACKER)
    for absent in ("pgolf.quant.gptq", "pgolf.quant.hessians", "pgolf.quant.lqer", "pgolf.quant.qat",
                   "pgolf.ops.int6_matmul", "pgolf.ops.softcapped_ce", "pgolf.ops.leaky_relu2_mlp", "pgolf.eval.packed"):
        assert absent not in smoke
    assert {"pgolf.optim.muon", "pgolf.ops.newton_schulz", "pgolf_kernels.newton_schulz", "pgolf.quant.rtn"} <= smoke
    gdn = import_closure(preset("gdn"))
    assert GDN_ONLY | {"pgolf.quant.gptq", "pgolf.quant.hessians", "pgolf.quant.qat", "pgolf.ops.int6_matmul"} <= set(
        gdn.modules)  # gptq export, late QAT through the int6 kernel
    assert [p.name for p in gdn.native] == ["int6_matmul.cu", "int6_matmul_binding.cpp", "int6_pack.cuh"]  # pgolf._C
    assert import_closure(preset("smoke")).native == ()
    assert "pgolf.train.plots" not in smoke  # the commands draw the curves: a packed script needs no matplotlib
    assert "matplotlib" not in requirements(import_closure(preset("record_1855")))
    record = set(import_closure(preset("record_1855")).modules)
    assert {"pgolf.ops.softcapped_ce", "pgolf_kernels.softcapped_ce", "pgolf.ops.leaky_relu2_mlp", "pgolf.quant.lqer",
            "pgolf.quant.gptq", "pgolf.data.caseops", "pgolf.eval.ttt.engine", "pgolf.model.lora",
            "pgolf.data.packing"} <= record  # its LoRA TTT and packed rows
    assert not record & (GDN_ONLY | PACKER | {"pgolf.quant.qat", "pgolf.ops.int6_matmul", "pgolf.quant.awq"})
    assert "pgolf.train.resume" not in record and "pgolf.train.resume" in import_closure(
        preset("record_1855", "run.resume=x.pt")).modules  # continuing a run is an option; checkpoints are written
    resumed = pack(preset("record_1855", "run.resume=x.pt"))  # a resumed run packs as its recipe: no resume code
    assert "pgolf.train.resume" not in resumed.closure.modules and resumed.script == pack(preset("record_1855")).script
    assert "pgolf.train.checkpoint" in record and "pgolf.train.checkpoint_read" not in record
    assert not any(m.startswith("pgolf.ngram") for m in record) and "pgolf.eval.ngram_tilt" not in record  # frontier's
    assert "pgolf.eval.ttt.sliding" not in record  # its lora_ttt needs the TTT package, not the sliding mode
    sliding = set(import_closure(preset("record_1855", "eval.mode=sliding_ttt")).modules)
    assert {"pgolf.eval.ttt.sliding", "pgolf.eval.ttt.global_sgd"} <= sliding
    frontier = set(import_closure(preset("frontier")).modules)
    assert {"pgolf.ngram.state", "pgolf.ngram.share", "pgolf.ngram.tilt", "pgolf.eval.ngram_tilt"} <= frontier


def test_an_optional_module_imported_at_module_level_is_refused(monkeypatch):
    """Leaving out an optional module is only honest if nothing imports it unconditionally."""
    monkeypatch.setitem(trace.OPTIONAL, "pgolf.model.attention", lambda c: False)  # gpt.py imports it at the top
    with pytest.raises(PgolfError, match="gpt.py: imports pgolf.model.attention at module level"):
        import_closure(preset("smoke"))
    assert "pgolf.model.attention" in import_closure().modules  # without a config, every option is on


@pytest.mark.slow
@pytest.mark.parametrize("name,shrink", [("smoke", []), ("record_1855", [
    "model.vocab_size=1024", "model.num_layers=4", "model.stack.loop_layers=1-2", "model.stack.parallel_start=3",
    "export.codec=brotli", "export.calib_batches=2", "eval.ttt.lora_rank=4", "eval.ttt.batch_docs=16",
    "model.doc_isolation=false", "train.loader=stream", "train.warmdown_iters=0", "run.compile=false",  # CPU: no flex
    # backward; narrow, and a short TTT (3 minutes at full width and settings, the same modules either way)
    "model.model_dim=64", "model.num_heads=2", "model.num_kv_heads=1", "eval.ttt.seq_len=64", "eval.ttt.chunk_size=16",
    "eval.ttt.phases=1", "eval.ttt.prefix_docs=16", "eval.ttt.global_chunk_tokens=256", "eval.ttt.global_batch_seqs=4"])])
def test_a_run_loads_nothing_outside_its_closure(tmp_path, tiny_data, name, shrink):
    """The static closure against the modules a tiny run of the same options really loads (training, export,
    the artifact's score), in a fresh process."""
    data, tok = tiny_data
    args = [*TINY, *shrink, f"data.path={data}", f"data.tokenizer={tok}", f"run.out_dir={tmp_path}",
            "run.name=t"]
    script = tmp_path / "train_gpt.py"
    script.write_text("# stands for the packed script, which counts its own file and loads no packer\n")
    code = ("import sys,json\nfrom pgolf.config import load_config\nfrom pgolf.train.trainer import run_training\n"
            f"from pgolf.export import code_size\ncode_size.PACKED_SCRIPT = {str(script)!r}\n"
            f"run_training(load_config({name!r}, {args!r}, env={{}}))\n"
            "print('MODULES', json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('pgolf', 'pgolf_kernels'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_package_env(), timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = set(json.loads(proc.stdout.split("MODULES ", 1)[1]))
    closure = set(import_closure(load_config(name, args, env={})).modules)
    assert loaded - {"pgolf._C", "pgolf.ngram._ngram_state"} <= closure, loaded - closure
    assert not loaded & GDN_ONLY


def test_packed_script_format(packed_smoke):
    text = packed_smoke.script.decode("ascii")
    lines = text.splitlines()
    assert len(lines) == 2 and lines[0] + "\n" == WRAPPER_HEAD and packed_smoke.code_bytes == len(packed_smoke.script)
    files = unpack_files(packed_smoke.script)
    assert set(files) == set(packed_smoke.files) and "pgolf/configs/recipe.toml" in files
    assert set(files) == {trace.archive_name(m, p) for m, p in packed_smoke.closure.modules.items()} | {
        "pgolf/configs/recipe.toml"}  # the closure, nothing else
    for name, source in files.items():
        if name.endswith(".py"):
            compile(source, name, "exec")  # minified sources are valid Python
    assert packed_smoke.minified_bytes < packed_smoke.source_bytes
    recipe = files["pgolf/configs/recipe.toml"]  # the fields that differ from the defaults, no per-run ones
    assert load_config(None, [], env={}).to_dict() != preset("smoke").to_dict()
    assert "num_layers = 4" in recipe and "seed" not in recipe and "out_dir" not in recipe


def test_packed_recipe_is_the_config(tmp_path):
    """The embedded TOML, loaded as the packed script loads it, is the configuration (per-run fields aside)."""
    from pgolf.export.pack import RUN_ONLY

    cfg = preset("frontier", "run.seed=5", "run.name=x")
    toml = tmp_path / "recipe.toml"
    toml.write_text(unpack_files(pack(cfg).script)["pgolf/configs/recipe.toml"])
    got, want = load_config(toml, env={}).to_dict(), cfg.to_dict()
    for key in RUN_ONLY:
        got["run"].pop(key), want["run"].pop(key)
    assert got == want


def test_a_packed_script_given_run_resume_says_it_has_no_resume_code(tmp_path, tiny_data, packed_smoke):
    """A packed script reproduces a run from scratch: run.resume's code (pgolf.train.resume) is not in it, and
    asking for it is a clear error before the run directory exists, not an ImportError."""
    data, tok = tiny_data
    script = tmp_path / "train_gpt.py"
    script.write_bytes(packed_smoke.script)
    args = [*TINY, f"data.path={data}", f"data.tokenizer={tok}", f"run.out_dir={tmp_path}", "run.name=r",
            f"run.resume={tmp_path / 'checkpoint.pt'}"]
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=tmp_path,
                          env=_package_env(), timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "train_gpt.py: error: run.resume=" in proc.stderr and "no resume code" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "r").exists()


def _package_env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


@pytest.mark.slow
def test_packed_script_reproduces_the_package_val_bpb(tmp_path, tiny_data, packed_smoke):
    """The same run, by `python -m pgolf train` and by the packed script in a clean venv without pgolf."""
    from pgolf.submit.verify import isolated_python, packed_val_bpb, run_isolated

    data, tok = tiny_data
    args = [*TINY, f"data.path={data}", f"data.tokenizer={tok}", f"run.out_dir={tmp_path}", "run.seed=7"]
    env = {k: v for k, v in _package_env().items() if not k.startswith(("SEED", "ITERATIONS", "DATA_PATH"))}
    pkg = subprocess.run([sys.executable, "-m", "pgolf", "train", "--config", "smoke", *args, "run.name=pkg"],
                         capture_output=True, text=True, env=env, timeout=1800)
    assert pkg.returncode == 0, pkg.stderr[-2000:]
    script = tmp_path / "train_gpt.py"
    script.write_bytes(packed_smoke.script)
    with isolated_python(requirements(packed_smoke.closure)) as (python, _):
        proc = run_isolated(python, script, [*args, "run.name=packed"], cwd=tmp_path, env=env)
    bpb = packed_val_bpb(proc)
    expected = json.loads((tmp_path / "pkg" / "result.json").read_text())["final"]["val_bpb"]
    assert f"{bpb:.8f}" == f"{expected:.8f}"
    packed = json.loads((tmp_path / "packed" / "result.json").read_text())["final"]
    assert packed["val_bpb"] == expected  # bitwise: the same code path, minified
    export = json.loads((tmp_path / "packed" / "result.json").read_text())["export"]
    assert export["code_bytes"] == packed_smoke.code_bytes and export["code_mode"] == "packed"  # counts its own file


def test_the_packed_script_rescores_the_artifact_in_a_clean_venv(tmp_path, seed_runs):
    """The proof pgolf submit runs: in a clean venv holding only requirements.txt (pgolf not importable there), the
    packed script scores a seed's artifact to the run's val_bpb, bitwise."""
    from pgolf.submit.records import read_run, requirements, verify_artifacts
    from pgolf.submit.verify import isolated_python

    run = read_run(seed_runs[0])
    packed = pack(run.config)
    reqs = requirements(packed.closure)
    script = tmp_path / "train_gpt.py"
    script.write_bytes(packed.script)
    seed = verify_artifacts([run], script, packed.code_bytes, reqs)["seeds"][str(run.seed)]
    assert seed["val_bpb"] == seed["logged_val_bpb"] == run.result["final"]["val_bpb"]
    assert seed["bytes_total"] == run.result["export"]["artifact_bytes"] + packed.code_bytes
    probe = ("import importlib.util as u\nprint([u.find_spec(n) is None for n in ('torch', 'numpy', 'sentencepiece', "
             "'brotli', 'pgolf', 'pgolf_kernels', 'pytest', 'python_minifier', 'scipy')])")
    with isolated_python(reqs) as (python, _):
        r = subprocess.run([str(python), "-I", "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert r.stdout.strip() == str([False] * 4 + [True] * 5), r.stderr[-2000:]  # only the allowed dependencies


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
    files = unpack_files((tmp_path / "rec" / "train_gpt.py").read_bytes())
    assert "num_layers = 2" in files["pgolf/configs/recipe.toml"]  # the runs' own recipe is the packed preset
    run_cfg = from_dict(json.loads((seed_runs[0] / "config.json").read_text()), "config.json")
    assert count_code_bytes("wrapped", run_cfg).counted_bytes == code  # what export.code_bytes="wrapped" counts
    reqs = (tmp_path / "rec" / "requirements.txt").read_text()
    assert "torch" in reqs and "brotli" in reqs and "pgolf" not in reqs.split("#")[0]
    assert "bytes_total" in (tmp_path / "rec" / "README.md").read_text() and "verification" not in sub


@pytest.mark.slow
def test_records_folder_verified_by_the_packed_script(tmp_path, seed_runs):
    sub = write_submission(seed_runs, SubmitOptions(tmp_path / "rec", "A. Author", "aauthor", "Tiny test"))
    assert sub["p_value"] is None
    assert "clean venv" in sub["verification"]["method"]
    for seed, v in sub["verification"]["seeds"].items():  # rescored by the packed script without pgolf
        assert v["val_bpb"] == v["logged_val_bpb"] == sub["seed_results"][seed]["val_bpb"]
        assert v["bytes_total"] == sub["seed_results"][seed]["bytes_total"] < 16_000_000


@pytest.mark.slow
def test_a_wrapped_run_counts_the_script_submit_ships(tmp_path, tiny_data):
    """export.code_bytes=wrapped: the run's logged code bytes are the size of the train_gpt.py pgolf submit writes."""
    from conftest import tiny_config
    from pgolf.train.trainer import run_training

    run = run_training(tiny_config(tiny_data, tmp_path, "export.code_bytes=wrapped", "run.seed=3")).run_dir
    export = json.loads((run / "result.json").read_text())["export"]
    sub = write_submission([run], SubmitOptions(tmp_path / "rec", "a", "b", "c", verify=False))
    assert export["code_mode"] == "wrapped"
    assert export["code_bytes"] == sub["bytes_code"] == (tmp_path / "rec" / "train_gpt.py").stat().st_size


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
    late = tmp_path / "late"  # a run whose Hessians pushed training past the cap
    late.mkdir()
    result = json.loads((seed_runs[1] / "result.json").read_text())
    result["within_cap"] = False
    (late / "result.json").write_text(json.dumps(result))
    for name in ("config.json", "train.log"):
        (late / name).write_bytes((seed_runs[1] / name).read_bytes())
    with pytest.raises(PgolfError, match="late: its training .* ended past the wallclock cap"):
        write_submission([seed_runs[0], late], SubmitOptions(tmp_path / "rec4", "a", "b", "c", verify=False))
    assert not (tmp_path / "rec4").exists()


def test_a_packer_failure_stops_a_run_before_it_trains(tmp_path, tiny_data, monkeypatch):
    """A run that counts its packed script measures it at setup: if packing fails, nothing has trained or
    been written (not a lost run at export)."""
    import pgolf.export.pack as pack_module
    from pgolf.train.trainer import run_training

    def broken(cfg):
        raise PgolfError("packing failed")

    monkeypatch.setattr(pack_module, "pack", broken)
    data, tok = tiny_data
    cfg = load_config("smoke", [*TINY, f"data.path={data}", f"data.tokenizer={tok}", f"run.out_dir={tmp_path}",
                                "run.name=p", "export.code_bytes=wrapped"], env={})
    with pytest.raises(PgolfError, match="packing failed"):
        run_training(cfg)
    assert not (tmp_path / "p").exists()
