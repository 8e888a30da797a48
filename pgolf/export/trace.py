"""Which source files a packed training script needs: the static import closure of its entry.

Starting from the entry modules (the config loader, the trainer and the artifact scorer), every `import` and
`from ... import` of a pgolf or pgolf_kernels module is followed, at module level and
inside functions alike, plus the kernels loaded by name (`kernel_module("x")` ->
`pgolf_kernels.x`) and every parent package's `__init__`. A module not reachable this way
cannot run, so it is not shipped; a reachable one is, even if a given preset never
executes it (the closure is per import graph: pgolf's model and trainer import every
architecture at module level, so presets differ only by their TOML).

`import pgolf._C` (the compiled CUDA extension) makes the native sources in csrc/ count
too: they add capability (spec §1.2), even though the packed script does not build them.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pgolf
import pgolf_kernels

from pgolf.errors import PgolfError

ROOTS = {"pgolf": Path(pgolf.__file__).resolve().parent, "pgolf_kernels": Path(pgolf_kernels.__file__).resolve().parent}
NATIVE_MODULE = "pgolf._C"
NATIVE_SUFFIXES = (".cu", ".cuh", ".cpp", ".h")
# train (python -m pgolf.train: its parser, the trainer, export); score an artifact
ENTRY_MODULES = ("pgolf.config", "pgolf.train.__main__", "pgolf.train.trainer", "pgolf.eval.scoring")


@dataclass(frozen=True)
class Closure:
    modules: dict[str, Path]  # module name -> source file
    native: tuple[Path, ...]  # CUDA/C++ sources counted with the code


def module_file(name: str) -> Path | None:
    top, _, rest = name.partition(".")
    root = ROOTS.get(top)
    if root is None:
        return None
    base = root.joinpath(*rest.split(".")) if rest else root
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _resolve(module: str, level: int, current: str, is_package: bool) -> str:
    if not level:
        return module
    parts = current.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imported_names(name: str, path: Path) -> set[str]:
    """Modules a source file imports (absolute names), including `from pkg import submodule`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(node.module or "", node.level, name, is_package)
            found.add(mod)
            found.update(f"{mod}.{alias.name}" for alias in node.names)  # kept only if it is a module
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "kernel_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(f"pgolf_kernels.{node.args[0].value}")
    return found


def import_closure(entries: tuple[str, ...] = ENTRY_MODULES) -> Closure:
    modules: dict[str, Path] = {}
    native = False
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in modules:
            continue
        if name == NATIVE_MODULE:
            native = True
            continue
        path = module_file(name)
        if path is None:
            if name in entries:
                raise PgolfError(f"entry module {name} has no source file")
            continue  # a name imported from a module (a function, a class), or a third-party module
        modules[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
        todo += sorted(imported_names(name, path))
    csrc = ROOTS["pgolf"].parent / "csrc"
    used = set(modules) | ({NATIVE_MODULE} if native else set())
    sources = tuple(sorted(p for p in csrc.glob("*") if p.suffix in NATIVE_SUFFIXES and native_of(p) in used)
                    ) if csrc.is_dir() else ()
    return Closure(dict(sorted(modules.items())), sources)


def native_of(source: Path) -> str:
    """The module whose capability a csrc/ source is: the n-gram state build is loaded (with ctypes)
    by pgolf.ngram.native; every other source builds pgolf._C (setup.py)."""
    return "pgolf.ngram.native" if source.name.startswith("ngram") else NATIVE_MODULE


def archive_name(module: str, path: Path) -> str:
    """The path a module's file takes in the packed tree (pgolf_kernels keeps its installed name)."""
    top = module.split(".")[0]
    return f"{top}/{path.relative_to(ROOTS[top]).as_posix()}"
