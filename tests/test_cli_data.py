import json
import subprocess
import sys

import pytest

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


def test_unwritable_output_paths_are_clear_errors(tmp_path, capsys, monkeypatch):
    """Read-only --out parents (faked: root, which runs the suite in CI, ignores permissions)."""
    import os
    from pathlib import Path

    from pgolf.data.outputs import created_dir
    from pgolf.errors import PgolfError

    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != ro and real_access(p, mode, **kw))
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(json.dumps({"text": "x"}) + "\n")
    assert main(["data", "tokenizer", str(corpus), "--out", str(ro / "t.model"), "--vocab-size", "300"]) == 2
    err = capsys.readouterr().err
    assert f"{ro} is not writable" in err and "Traceback" not in err
    monkeypatch.setattr(os, "access", real_access)

    def refuse(self, *a, **kw):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(PgolfError, match=r"--out .*new/deeper: cannot create it \(Permission denied\)"):
        with created_dir(tmp_path / "new" / "deeper", "--out"):
            pass
