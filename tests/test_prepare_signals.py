"""`pgolf data prepare` killed mid-run (issue 12): its encoder workers must exit, and nothing may be left.

SIGTERM is handled: the staging directory and the --out it created are removed, the pool is shut
down, and the message is one line. SIGKILL cannot be handled: the workers notice that their parent
is gone and exit, and the next prepare into the same --out removes the dead run's staging directory.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pgolf.data.prepare import PrepareOptions, prepare

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc to find the worker processes")
WAIT_S = 60


def _pool_workers(pid: int) -> list[int]:
    """The multiprocessing-spawned children of `pid` (not its resource tracker)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmd:
            found.append(int(d.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(cond, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def big_input(tmp_path_factory, bbc_docs):
    """Enough text that two workers are still encoding when the signal arrives."""
    path = tmp_path_factory.mktemp("sig") / "docs.jsonl"
    with open(path, "w") as f:
        for _ in range(10):
            f.writelines(json.dumps({"text": d}) + "\n" for d in bbc_docs)
    return path


def _start(big_input: Path, tok: Path, out: Path) -> tuple[subprocess.Popen, list[int]]:
    proc = subprocess.Popen([sys.executable, "-m", "pgolf", "data", "prepare", str(big_input), "--tokenizer", str(tok),
                             "--out", str(out), "--val-docs", "10", "--workers", "2", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: (out / f".staging-{proc.pid}").is_dir() and len(_pool_workers(proc.pid)) >= 2,
              "the staging directory and two encoder workers")
    except AssertionError:
        proc.kill()
        raise
    return proc, _pool_workers(proc.pid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_prepare_leaves_no_workers_and_no_staging(sig, big_input, own_tokenizer, tmp_path):
    out = tmp_path / "out"
    proc, workers = _start(big_input, own_tokenizer.path, out)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=WAIT_S)
    finally:
        proc.kill()
    _wait(lambda: not any(_alive(w) for w in workers), f"encoder workers {workers} to exit", timeout=20)
    if sig == signal.SIGTERM:
        assert proc.returncode not in (0, None)
        assert "Traceback" not in err and "SIGTERM" in err, err[-2000:]
        assert not out.exists(), sorted(p.name for p in out.iterdir())  # it created --out, so it removed it
    else:
        assert (out / f".staging-{proc.pid}").is_dir()  # nothing can clean up after SIGKILL ...
        small = tmp_path / "small.jsonl"
        small.write_text("".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(20)))
        prepare(PrepareOptions(inputs=[small], tokenizer=own_tokenizer.path, out_dir=out, val_docs=5,
                               workers=1, progress=False))
        assert not list(out.glob(".staging-*"))  # ... but the next prepare into --out does
