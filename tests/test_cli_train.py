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
    assert (tmp_path / "cli" / "curves.png").stat().st_size > 0  # `pgolf train` draws the run's curves

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


TTT_TINY = ["eval.mode=lora_ttt", "eval.ttt.seq_len=64", "eval.ttt.chunk_size=16", "eval.ttt.batch_docs=16",
            "eval.ttt.lora_rank=4", "eval.ttt.phases=1", "eval.ttt.prefix_docs=16", "eval.ttt.global_chunk_tokens=256",
            "eval.ttt.global_batch_seqs=4"]


def test_a_ttt_run_scores_with_its_mode_writes_its_ledger_and_pgolf_eval_and_check_agree(tmp_path, tiny_data,
                                                                                           capsys):
    """End to end: train with eval.mode=lora_ttt; the final score is TTT's (with the records-comparable
    figure), its ledger is beside it; `pgolf eval` rescores the file with the recorded mode to the same
    number, and `pgolf check --ledger` passes C3 on the run's ledger."""
    data, tok = tiny_data
    assert main(["train", "--config", "smoke", *tiny_args(tiny_data, tmp_path), *TTT_TINY]) == 0
    capsys.readouterr()
    run = tmp_path / "cli"
    result = json.loads((run / "result.json").read_text())
    details = result["mode_details"]
    assert result["ledger"].endswith("score_ledger.npz") and (run / "score_ledger.npz").is_file()
    assert details["bos_targets"] > 0 and details["records_comparable_bpb"] < result["final"]["val_bpb"]
    assert details["lora_updates"] > 0 and details["global_sgd_steps"] > 0
    assert main(["eval", str(run / "model.pgolf"), "--json", "--device", "cpu", "--ledger",
                 str(tmp_path / "again.npz")]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["mode"] == "lora_ttt" and abs(scored["val_bpb"] - result["final"]["val_bpb"]) < 1e-9
    assert (tmp_path / "again.npz").is_file()
    assert main(["check", "--config", "smoke", "--artifact", str(run / "model.pgolf"), "--ledger",
                 str(run / "score_ledger.npz"), "--tokens", "300", "--cuts", "1", "--no-disjoint",
                 f"data.path={data}", f"data.tokenizer={tok}", *TINY]) == 0
    out = capsys.readouterr().out
    assert "mode lora_ttt" in out and "(score_ledger.npz)" in out and "FAIL" not in out
