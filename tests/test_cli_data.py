import json
import subprocess
import sys

from pgolf.cli import main


def test_tokenizer_prepare_inspect_through_the_cli(tmp_path, bbc_docs, capsys):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in bbc_docs[:300]))
    model = tmp_path / "tok" / "t.model"
    assert main(["data", "tokenizer", str(corpus), "--out", str(model), "--vocab-size", "512", "--max-docs", "200"]) == 0
    assert model.is_file()
    out = tmp_path / "ds"
    assert main(["data", "prepare", str(corpus), "--tokenizer", str(model), "--out", str(out),
                 "--val-docs", "50", "--workers", "1", "--quiet"]) == 0
    assert "val:   50 docs" in capsys.readouterr().out
    assert main(["data", "inspect", str(out), "--tokenizer", str(model)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["val"]["byte_source"] == "lut" and report["train"]["tokens"] > 0


def test_errors_are_one_clean_line(tmp_path, capsys):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(json.dumps({"text": "x"}) + "\n")
    assert main(["data", "prepare", str(corpus), "--tokenizer", str(tmp_path / "none.model"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pgolf: error: tokenizer ") and "none.model does not exist" in err and "Traceback" not in err
    assert main(["data", "inspect", str(tmp_path / "missing")]) == 2
    assert "missing does not exist" in capsys.readouterr().err


def test_module_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "pgolf", "data", "download", "--variant", "sp1024", "--bogus"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unrecognized arguments: --bogus" in r.stderr
