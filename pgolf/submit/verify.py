"""Run a packed script in a fresh process that cannot import the installed pgolf.

The child starts with `python -I -S` (no site processing, so no editable-install finder
and no .pth files; the current directory is not on the path) and gets only the
interpreter's site-packages directories appended, which hold the allowed third-party
dependencies (torch, numpy, sentencepiece, brotli, ...). It asserts that `pgolf` is not
importable before the script runs, so everything pgolf comes from the script itself.
This is a lighter stand-in for a clean virtual environment (which would need a fresh
torch install); the dependencies seen are the same ones requirements.txt lists.
"""
from __future__ import annotations

import json
import re
import site
import subprocess
import sys
from pathlib import Path

from pgolf.errors import PgolfError

_CHILD = """import sys
sys.path.extend({paths!r})
import importlib.util, runpy
assert importlib.util.find_spec('pgolf') is None and importlib.util.find_spec('pgolf_kernels') is None, 'pgolf is visible'
sys.argv = [{script!r}, *{args!r}]
runpy.run_path({script!r}, run_name='__main__')
"""


def site_dirs() -> list[str]:
    return [p for p in site.getsitepackages() if Path(p).is_dir()]


def run_isolated(script: str | Path, args: list[str], cwd: str | Path, timeout: float = 1800,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    code = _CHILD.format(paths=site_dirs(), script=str(Path(script).resolve()), args=list(args))
    return subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def packed_val_bpb(proc: subprocess.CompletedProcess) -> float:
    m = re.search(r"^val_bpb (\S+) val_loss", proc.stdout, re.M)
    if proc.returncode != 0 or m is None:
        raise PgolfError(f"the packed script failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return float(m.group(1))


def packed_eval(proc: subprocess.CompletedProcess) -> dict:
    """The result a packed script's `eval` printed."""
    m = re.search(r"^eval (\{.*\})$", proc.stdout, re.M)
    if proc.returncode != 0 or m is None:
        raise PgolfError(f"the packed script's eval failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(m.group(1))
