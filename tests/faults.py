"""The fault-injection harness: a case plants one fault in a copy of a small demo run and
runs one `pgolf` command on it; the command must fail cleanly.

Clean means: a non-zero exit, a message on stderr that names the thing at fault (the
case's `expect`), no traceback, no val_bpb printed, and no file left behind or changed.
Cases live in tables (tests/fault_cases_*.py); tests/test_faults.py walks them all.

The demo run (`demo_dir`, built once per session) holds, relative to its root:
  docs.jsonl            400 BBC articles, one {"text": ...} per line
  tok.model, tok.vocab  a 1024-piece SentencePiece tokenizer trained on them
  data/                 a prepared dataset (manifest.json, val and train shards), 40 val docs
  runs/t/               a finished 8-step tiny run: config.json, checkpoint.pt, model.pgolf, logs
Every path in it is relative, so a copy works wherever it lands; commands run with the
copy as the current directory.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pgolf.cli import main

RUN_DIR = Path("runs") / "t"
CHECKPOINT = RUN_DIR / "checkpoint.pt"
ARTIFACT = RUN_DIR / "model.pgolf"


@dataclass(frozen=True)
class Fault:
    id: str  # the pytest id
    argv: list[str]  # `pgolf` arguments, run with the case's copy of the demo run as cwd
    expect: str  # a piece of the error message: the file, field or flag it must name
    setup: Callable[[Path], None] | None = None  # plants the fault in the copy (before the snapshot)
    env: dict[str, str] = field(default_factory=dict)  # environment variables for the command
    allowed_new: tuple[str, ...] = ()  # paths (relative) the command may leave; keep this empty where possible


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under `root`: relative path -> (size, mtime_ns); directories size -1."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            p = Path(dirpath) / name
            out[str(p.relative_to(root)) + "/"] = (-1, 0)
        for name in filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def run_fault(case: Fault, workdir: Path, capsys, monkeypatch) -> None:
    """Plant the fault in `workdir`, run the command there, and assert that it failed cleanly."""
    if case.setup is not None:
        case.setup(workdir)
    before = snapshot(workdir)
    monkeypatch.chdir(workdir)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    try:
        rc = main(list(case.argv))
    except SystemExit as e:  # argparse errors exit 2 with a usage message
        rc = e.code
    # Any other exception propagates and fails the test with its traceback: that is the bug.
    out, err = capsys.readouterr()
    assert rc not in (0, None), f"exit {rc}; stdout: {out[-500:]!r}; stderr: {err[-500:]!r}"
    assert "Traceback" not in err, err[-2000:]
    assert case.expect in err, f"the message does not name {case.expect!r}: {err[-1000:]!r}"
    assert "val_bpb" not in out, f"a number was printed: {out[-500:]!r}"
    after = snapshot(workdir)
    allowed = set(case.allowed_new)
    new = sorted(p for p in after.keys() - before.keys() if p.rstrip("/") not in allowed)
    changed = sorted(p for p in before.keys() & after.keys() if before[p] != after[p] and not p.endswith("/"))
    gone = sorted(before.keys() - after.keys())
    assert not new, f"left behind: {new}"
    assert not changed, f"changed: {changed}"
    assert not gone, f"removed: {gone}"


def copy_demo(demo_dir: Path, dest: Path) -> Path:
    shutil.copytree(demo_dir, dest, symlinks=True)
    return dest
