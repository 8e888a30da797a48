"""Run a packed script in a clean virtual environment that holds only its requirements.

`clean_venv` makes a venv (`python -m venv --without-pip`, from this interpreter's base) and
puts into its site-packages only the distributions of requirements.txt and those they require
(their metadata's `Requires-Dist`, markers evaluated, extras not taken), each linked from this
interpreter's installed copy: the allowed dependencies exactly, offline, and no pgolf (neither
the package nor its editable-install finder). The child runs as `VENV/bin/python -I` (no
environment variables, no user site, no script directory on the path) from the records folder,
and asserts that pgolf is not importable before the script runs, so everything pgolf comes from
the script itself. A requirement that is not installed here (an optional one such as flash_attn
on a CPU machine) is left out and listed.
"""
from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from pgolf.errors import PgolfError

_CHILD = """import importlib.util, runpy, sys
assert importlib.util.find_spec('pgolf') is None and importlib.util.find_spec('pgolf_kernels') is None, 'pgolf is visible'
sys.argv = [{script!r}, *{args!r}]
runpy.run_path({script!r}, run_name='__main__')
"""


def _wanted(requirement: str) -> str | None:
    """The distribution a Requires-Dist line names, if it applies here (no extra, markers true)."""
    name, _, marker = requirement.partition(";")
    if "extra" in marker:
        return None
    if marker.strip():
        try:
            from packaging.markers import Marker
        except ImportError:  # cannot evaluate: take it if installed
            pass
        else:
            if not Marker(marker.strip()).evaluate():
                return None
    return re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", name).group(1)


def distributions(requirements: list[str]) -> tuple[list[metadata.Distribution], list[str]]:
    """(installed distributions: the requirements and what they require, transitively; names not installed)."""
    found: dict[str, metadata.Distribution] = {}
    missing: list[str] = []
    todo = list(requirements)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in found or name in missing:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        found[key] = dist
        todo += [n for n in map(_wanted, dist.requires or []) if n]
    return list(found.values()), sorted(missing)


def _top_level(dist: metadata.Distribution) -> set[str]:
    return {f.parts[0] for f in dist.files or () if f.parts and f.parts[0] not in ("..", "__pycache__")}


def clean_venv(dest: Path, requirements: list[str]) -> tuple[Path, list[str]]:
    """(the venv's python, requirements not installed here) for a venv at `dest` holding only `requirements`."""
    base = getattr(sys, "_base_executable", sys.executable)
    proc = subprocess.run([base, "-m", "venv", "--without-pip", str(dest)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise PgolfError(f"cannot create a clean venv at {dest}: {proc.stderr.strip()[-500:]}")
    python = dest / "bin" / "python"
    site = Path(subprocess.run([python, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    dists, missing = distributions(requirements)
    for dist in dists:
        for top in sorted(_top_level(dist)):
            link, source = site / top, Path(dist.locate_file(top))
            if not link.exists() and source.exists():
                link.symlink_to(source, target_is_directory=source.is_dir())
    return python, missing


@contextlib.contextmanager
def isolated_python(requirements: list[str]) -> Iterator[tuple[Path, list[str]]]:
    with tempfile.TemporaryDirectory(prefix="pgolf-venv-") as d:
        yield clean_venv(Path(d) / "venv", requirements)


def run_isolated(python: Path, script: str | Path, args: list[str], cwd: str | Path, timeout: float = 1800,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`script args` with the clean venv's interpreter, in isolated mode, pgolf asserted absent."""
    code = _CHILD.format(script=str(Path(script).resolve()), args=list(args))
    return subprocess.run([str(python), "-I", "-c", code], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)


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
