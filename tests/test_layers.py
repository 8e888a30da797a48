"""The package layers (README "How it fits together"): data flows one way, checked by
import-linter's layers contract in pyproject.toml. grimp, under import-linter, reads every
import statement of a module, those inside functions included."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("importlinter", reason="import-linter is in the test extra (pip install -e '.[test]')")


def lint(root: Path) -> subprocess.CompletedProcess:
    """lint-imports on the package under `root`, with the repository's contract."""
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": ""},
                          timeout=300)


def test_the_package_keeps_its_layers():
    r = lint(REPO)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "1 kept, 0 broken" in r.stdout


def test_a_planted_upward_import_inside_a_function_is_caught(tmp_path):
    shutil.copytree(REPO / "pgolf", tmp_path / "pgolf", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    model = tmp_path / "pgolf" / "model" / "gpt.py"
    model.write_text(model.read_text() + "\n\ndef _planted():\n    from pgolf.train import trainer  # upward\n")
    r = lint(tmp_path)
    assert r.returncode != 0
    assert "pgolf.model is not allowed to import pgolf.train" in r.stdout, r.stdout[-3000:]


def test_every_module_of_a_split_package_is_in_a_layer():
    """pgolf.data's modules are listed one by one (its tools sit above pgolf.metric, the rest
    below): a new module there must be placed too, or the contract would not see it."""
    import tomllib

    layers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    named = {m.strip(" ()") for layer in layers for m in layer.replace("|", ":").split(":")}
    modules = {f"pgolf.data.{p.stem}" for p in (REPO / "pgolf" / "data").glob("*.py") if p.stem != "__init__"}
    assert modules <= named, f"not in any layer of pyproject.toml: {sorted(modules - named)}"
