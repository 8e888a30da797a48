import json
import re
import subprocess
import sys

from conftest import TINY, REPO
from pgolf.cli import main


def tiny_args(tiny_data, out):
    data, tok = tiny_data
    return [*TINY, f"DATA_PATH={data}", f"TOKENIZER_PATH={tok}", f"run.out_dir={out}", "run.name=cli"]


def test_train_then_eval_then_export_from_the_command_line(tmp_path, tiny_data, capsys):
    assert main(["train", "--config", "smoke", *tiny_args(tiny_data, tmp_path)]) == 0
    out = capsys.readouterr().out
    bpb = float(re.search(r"val_bpb ([0-9.]+) \(val_loss", out).group(1))
    artifact = tmp_path / "cli" / "model.pgolf"

    assert main(["eval", str(artifact), "--json", "--device", "cpu", "--batch-tokens", "4096"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert abs(scored["val_bpb"] - bpb) < 5e-7 and scored["byte_source"] == "lut" and scored["seq_len"] == 64

    assert main(["eval", str(artifact), "--stride", "16", "--device", "cpu", "--batch-tokens", "4096"]) == 0
    assert "stride 16" in capsys.readouterr().out

    again = tmp_path / "again.pgolf"
    assert main(["export", str(tmp_path / "cli" / "checkpoint.pt"), "--out", str(again), "COMPRESSOR=lzma",
                 "export.layout=grouped"]) == 0
    out = capsys.readouterr().out
    assert "(rtn, grouped," in out and "lzma" in out and again.is_file()
    assert main(["export", str(tmp_path / "cli" / "checkpoint.pt"), "--out", str(again), "train.iterations=3"]) == 2
    assert "export settings only" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "cli" / "checkpoint.pt"), "--out", str(again), "export.method=gptq"]) == 2
    assert "needs Hessians" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "cli" / "checkpoint.pt"), "--out", str(again), "LOGIT_CALIB=1"]) == 2
    assert "fitted by the trainer" in capsys.readouterr().err
    # a re-export records the run's data and seq_len, so it scores exactly as the original
    assert main(["eval", str(again), "--json", "--device", "cpu", "--batch-tokens", "4096"]) == 0
    rescored = json.loads(capsys.readouterr().out)
    assert rescored["seq_len"] == 64 and rescored["val_bpb"] == scored["val_bpb"]


def test_cli_errors_name_the_problem(tmp_path, tiny_data, capsys):
    assert main(["train", "--config", "smoke", *tiny_args(tiny_data, tmp_path), "train.iteratons=3"]) == 2
    assert "unknown setting 'train.iteratons'" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing.pgolf")]) == 2
    assert "artifact" in capsys.readouterr().err
    bad = tmp_path / "bad.pgolf"
    bad.write_bytes(b"PGOLFART" + b"\0" * 64)
    assert main(["eval", str(bad), "--data", "x", "--tokenizer", "y"]) == 2
    assert "bad.pgolf: artifact format version 0" in capsys.readouterr().err


def test_torchrun_entry_point_module(tmp_path, tiny_data):
    r = subprocess.run([sys.executable, "-m", "pgolf.train", "--config", "smoke", *tiny_args(tiny_data, tmp_path),
                        "train.iterations=2"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "val_bpb" in r.stdout


def test_demo_runs_the_whole_pipeline(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path), "--quiet", "train.iterations=20", "train.val_every=0"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\[demo\] val_bpb [0-9.]+ \(from the artifact file\), artifact [0-9,]+ B", out), out[-2000:]
    assert (tmp_path / "run" / "model.pgolf").is_file() and (tmp_path / "data" / "manifest.json").is_file()


def test_eval_defaults_to_the_stride_the_run_scored_with(tmp_path, tiny_data, capsys):
    assert main(["train", "--config", "smoke", *tiny_args(tiny_data, tmp_path), "eval.stride=16"]) == 0
    bpb = float(re.search(r"val_bpb ([0-9.]+) \(val_loss", capsys.readouterr().out).group(1))
    assert main(["eval", str(tmp_path / "cli" / "model.pgolf"), "--json", "--device", "cpu",
                 "--batch-tokens", "4096"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["stride"] == 16 and scored["mode"] == "windows" and abs(scored["val_bpb"] - bpb) < 5e-7
