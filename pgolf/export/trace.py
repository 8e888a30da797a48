"""Which source files a training run of a given configuration needs: the import closure of its entry.

Starting from the entry modules (the config loader, the trainer and the artifact scorer), every `import` and
`from ... import` of a pgolf or pgolf_kernels module is followed, at module level and
inside functions alike, plus the kernels loaded by name (`kernel_module("x")` ->
`pgolf_kernels.x`) and every parent package's `__init__`.

Per configuration: the modules in `OPTIONAL` serve one option each, and their importers
import them only inside the code that runs when that option is on. The closure of a
configuration without the option does not follow those imports. That is only honest if no
module imports an optional module at module level (where it would run regardless), so the
tracer refuses such an import instead of silently dropping the module; and the tests run
packed presets without the installed package, so a module the tracer wrongly left out fails.

`import pgolf._C` (the compiled CUDA extension) makes the native sources in csrc/ count
too: they add capability (spec §1.2), even though the packed script does not build them.
"""
from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pgolf
import pgolf_kernels

from pgolf.config import Config
from pgolf.errors import PgolfError

ROOTS = {"pgolf": Path(pgolf.__file__).resolve().parent, "pgolf_kernels": Path(pgolf_kernels.__file__).resolve().parent}
NATIVE_MODULE = "pgolf._C"
NATIVE_SUFFIXES = (".cu", ".cuh", ".cpp", ".h")
# what a run executes: the config loader, the trainer (it exports), and the artifact scorer (`train_gpt.py eval`)
ENTRY_MODULES = ("pgolf.config", "pgolf.train.trainer", "pgolf.eval.scoring")

# module (and everything below it) -> when a run needs it; the importers import it lazily, where the option runs
OPTIONAL: dict[str, Callable[[Config], bool]] = {
    "pgolf.model.gdn": lambda c: c.model.arch == "gdn",  # GatedDeltaNet layers (and their scan ops, kernels)
    "pgolf.ops.softcapped_ce": lambda c: c.train.ce != "eager",  # the fused CE; the eager CE is F.cross_entropy
    "pgolf.ops.leaky_relu2_mlp": lambda c: c.train.mlp_impl == "fused",
    "pgolf.ops.int6_matmul": lambda c: c.train.qat_threshold > 0,  # late QAT's int6 fake-quant linear (and pgolf._C)
    "pgolf.quant.qat": lambda c: c.train.qat_threshold > 0,
    "pgolf.quant.gptq": lambda c: c.export.method == "gptq",
    "pgolf.quant.hessians": lambda c: c.export.method == "gptq",
    "pgolf.quant.lqer": lambda c: c.export.lqer_top > 0,
    "pgolf.quant.awq": lambda c: c.export.method == "gptq" and c.export.awq_lite,  # fitted at export, added back at load
    "pgolf.data.packing": lambda c: c.train.loader == "packed",  # the records' packed document rows
    "pgolf.data.calibration": lambda c: c.export.method == "gptq",  # GPTQ's random calibration windows
    "pgolf.optim.ema": lambda c: c.optim.ema_decay > 0,
    "pgolf.train.logit_calibration": lambda c: c.export.logit_calib,  # the fit (the stored map loads always)
    "pgolf.metric.token_features": lambda c: c.export.logit_calib,
    "pgolf.ngram": lambda c: c.eval.ngram.enabled,  # the n-gram tilt (and its native state build)
    "pgolf.eval.ngram_tilt": lambda c: c.eval.ngram.enabled,  # eval's side of it (pgolf.eval.tilt has the untilted score)
    "pgolf.eval.ttt": lambda c: c.eval.mode in ("lora_ttt", "sliding_ttt"),
    "pgolf.eval.ttt.sliding": lambda c: c.eval.mode == "sliding_ttt",  # the lora_ttt mode needs none of it
    "pgolf.train.resume": lambda c: bool(c.run.resume),  # continuing from a checkpoint (and reading one back)
    "pgolf.eval.packed": lambda c: False,  # `pgolf eval --packed` only, never a run or a packed script
    # the packer's own tools: a packed script counts its own file instead (pgolf.export.code_size)
    "pgolf.export.trace": lambda c: False,
    "pgolf.export.pack": lambda c: False,
    "pgolf.export.minify": lambda c: False,
    "pgolf.export.messages": lambda c: False,
}


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


def _names(node: ast.AST, name: str, is_package: bool) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if isinstance(node, ast.ImportFrom):
        mod = _resolve(node.module or "", node.level, name, is_package)
        return {mod, *(f"{mod}.{alias.name}" for alias in node.names)}  # kept only if it is a module
    if (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "kernel_module"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return {f"pgolf_kernels.{node.args[0].value}"}
    return set()


def imported_names(name: str, path: Path) -> dict[str, bool]:
    """Modules a source file imports (absolute names, including `from pkg import submodule`) -> whether every
    import of it is lazy (inside a function, so it runs only when that function does)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: dict[str, bool] = {}

    def visit(node: ast.AST, lazy: bool) -> None:
        if _type_checking_only(node):  # the body of `if TYPE_CHECKING:` never runs
            for child in node.orelse:
                visit(child, lazy)
            return
        for target in _names(node, name, is_package):
            found[target] = found.get(target, True) and lazy
        inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return found


def _type_checking_only(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or \
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def optional_owner(module: str) -> str | None:
    """The OPTIONAL entry a module falls under (itself or a package above it), if any."""
    parts = module.split(".")
    return next((p for p in (".".join(parts[:i]) for i in range(len(parts), 0, -1)) if p in OPTIONAL), None)


def import_closure(cfg: Config | None = None, entries: tuple[str, ...] = ENTRY_MODULES) -> Closure:
    """The modules `entries` need under `cfg` (None: every option on, i.e. every optional module)."""
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
        for target, lazy in sorted(imported_names(name, path).items()):
            owner = optional_owner(target)
            if cfg is not None and owner is not None and optional_owner(name) != owner and not OPTIONAL[owner](cfg):
                if not lazy and module_file(target) is not None:
                    raise PgolfError(f"{path}: imports {target} at module level, but {owner} is optional "
                                     f"(pgolf.export.trace.OPTIONAL): import it where the option runs")
                continue
            todo.append(target)
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
