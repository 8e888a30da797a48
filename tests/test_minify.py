"""The packer's minifier (pgolf.export.minify): smaller, same program."""
from __future__ import annotations

import ast
import sys
import types

import pytest

from pgolf.errors import PgolfError
from pgolf.export.minify import minify
from pgolf.export.trace import import_closure

SAMPLE = '''"""Module docstring."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


def setting(default, help: str = ""):  # a config field, as pgolf.config's
    return field(default=default, metadata={"help": help})


@dataclass
class Cfg:
    """Fields come from annotations: they must stay."""
    width: int = setting(3, help="how wide")
    name: str = "a b"
    tags: tuple = ()


def decorate(fn):
    fn.seen = dict(fn.__annotations__)  # a decorator that reads annotations (as torch.library.custom_op does)
    return fn


@decorate
def kept(x: int, *, y: "float" = 2.0) -> str:
    return f"{x}:{y!r}"


def plain(a: int, b: list[int] | None = None, *rest: int, **kw: str) -> dict:
    """Docstring."""
    total: int = a + sum(b or [])  # a local annotation
    count: int
    "a bare string statement"
    if total > 3:
        return {"t": total, "q": 'it\\'s "quoted"', "n": "x\\ny", "rest": rest, "kw": kw}
    else:
        pass
    for i in range(2):
        total -= i
    while False:
        ...
    try:
        total = total // 1
    except ZeroDivisionError:
        raise
    finally:
        total += 0
    return {"t": total, "lam": (lambda v=1: v)(), "neg": - -a, "pow": 2 ** -1, "f": f"{total:>4}|{'{'}"}


class Widget:
    """Docstring only: the body becomes `pass`."""


class Gadget:
    size: int = 2

    @property
    def double(self) -> int:
        return 2 * self.size
'''


def _run(source: str, monkeypatch) -> dict:
    module = types.ModuleType("minify_sample")
    monkeypatch.setitem(sys.modules, "minify_sample", module)  # dataclasses look their module up
    exec(compile(source, "sample", "exec"), module.__dict__)
    return module.__dict__


def test_minified_sample_behaves_the_same_and_is_smaller(monkeypatch):
    small = minify(SAMPLE, "sample.py")
    assert len(small) < 0.7 * len(SAMPLE)
    a, b = _run(SAMPLE, monkeypatch), _run(small, monkeypatch)
    for args in ((1, [1]), (5, None), (0, [0, 1], 7)):
        assert a["plain"](*args, k="v") == b["plain"](*args, k="v")
    assert a["kept"](3) == b["kept"](3) and a["kept"].seen == b["kept"].seen == {"x": "int", "y": "'float'",
                                                                                "return": "str"}
    fa, fb = (tuple((f.name, f.type, f.default) for f in m["dataclasses"].fields(m["Cfg"])) for m in (a, b))
    assert fa == fb == (("width", "int", 3), ("name", "str", "a b"), ("tags", "tuple", ()))
    assert b["Gadget"]().double == 4 and b["Widget"]() is not None
    # what goes: documentation only
    assert "docstring" not in small.lower() and "how wide" not in small and "#" not in small
    assert b["plain"].__annotations__ == {} and b["Cfg"].__dataclass_fields__["width"].metadata["help"] == ""
    assert "\n    " not in small and "def kept(x:int,*,y:'float'=2.0)->str:return" in small  # 1-space indent, joined body


def test_every_packed_module_minifies_to_the_same_program():
    """Every module of the whole package (every option on): minify() itself proves the renamed code
    compiles to the same code up to the renaming, and that the result parses to the renamed tree."""
    for module, path in import_closure().modules.items():
        source = path.read_text(encoding="utf-8")
        small = minify(source, str(path))
        compile(small, str(path), "exec")
        assert len(small) < len(source), module


def test_minify_refuses_what_is_not_python():
    with pytest.raises(PgolfError, match="bad.py: cannot minify, not valid Python"):
        minify("def f(:\n", "bad.py")


def test_minify_keeps_kernel_annotations():
    """Triton reads `tl.constexpr` annotations of jitted kernels: decorated functions keep theirs."""
    src = "import triton\n@triton.jit\ndef k(x_ptr, n: tl.constexpr, BLOCK: tl.constexpr):\n    pass\n"
    tree = ast.parse(minify(src))
    args = tree.body[1].args.args
    assert [ast.unparse(a.annotation) if a.annotation else None for a in args] == [None, "tl.constexpr", "tl.constexpr"]


def test_type_checking_imports_are_not_traced(tmp_path):
    from pgolf.export.trace import imported_names

    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pgolf.ngram\nelse:\n"
                   "    import pgolf.errors\ndef f():\n    import pgolf.fileio\n")
    found = imported_names("pgolf.m", src)
    assert "pgolf.ngram" not in found and found["pgolf.errors"] is False and found["pgolf.fileio"] is True


# Local-variable renaming (pass 2). Each case runs the original and the minified source and compares.

def _both(source: str, **injected) -> tuple[dict, dict, str]:
    small = minify(source, "case.py")
    spaces = []
    for code in (source, small):
        space = {"__name__": "case", **injected}
        exec(compile(code, "case.py", "exec"), space)
        spaces.append(space)
    return spaces[0], spaces[1], small


def _body(small: str, name: str) -> str:
    """The minified source of the top-level function `name`."""
    return next(ast.unparse(n) for n in ast.parse(small).body if getattr(n, "name", None) == name)


RENAMED = '''
import io
import math


def work(values, scale=2):
    total_sum = 0
    for position, value in enumerate(values):
        total_sum += value * position
    with io.StringIO("line\\n") as handle_name:
        first_line = handle_name.readline()
    if (doubled_value := total_sum * scale) > 10:
        total_sum = doubled_value
    squares_list = [item * item for item in values if item]
    lookup_table = {key_name: key_name + 1 for key_name in values}
    import json as json_module
    from math import floor as floor_fn
    import os.path
    joined_path = os.path.join("a", "b")
    scratch_space = [1]
    del scratch_space
    try:
        return scratch_space
    except UnboundLocalError:
        pass
    try:
        math.sqrt(-1)
    except ValueError as problem:
        problem_text = type(problem).__name__
    try:
        problem
    except NameError:
        problem_text += " cleared"
    return (f"{total_sum}|{first_line}|{squares_list!r}|{lookup_table}|{problem_text}"
            f"|{json_module.dumps(floor_fn(2.5))}|{doubled_value:>5}|{joined_path}")
'''


def test_locals_are_renamed_and_behave_the_same():
    a, b, small = _both(RENAMED)
    for args in (([1, 2, 3],), ([0, 5], 7), ([],)):
        assert a["work"](*args) == b["work"](*args)
    body = _body(small, "work")
    for local in ("total_sum", "position", "handle_name", "first_line", "doubled_value", "squares_list",
                  "lookup_table", "json_module", "floor_fn", "scratch_space", "problem", "problem_text", "joined_path"):
        assert local not in body, local
    assert "def work(values, scale=2)" in body and "import os.path" in body  # parameters and plain imports keep theirs
    assert minify(RENAMED) == small  # deterministic


def test_parameters_keep_their_names():
    """Callers may pass any parameter by keyword, lambdas' too."""
    src = ("def f(alpha, /, beta, *gamma, delta=1, **epsilon):\n    result_value = alpha + beta + delta\n"
           "    pick = lambda first_arg, second_arg=2: first_arg * second_arg\n"
           "    return result_value, gamma, epsilon, pick(second_arg=3, first_arg=result_value)\n")
    a, b, small = _both(src)
    assert a["f"](1, beta=2, delta=3, zeta=4) == b["f"](1, beta=2, delta=3, zeta=4) == (6, (), {"zeta": 4}, 18)
    assert "result_value" not in small and all(p in small for p in ("alpha", "beta", "gamma", "delta", "epsilon",
                                                                       "first_arg", "second_arg"))


def test_closures_rename_consistently_and_capture_nothing_new():
    """A local read by a nested function, lambda or comprehension is renamed there too, and never
    to a name an inner scope reads from outside (here `a`, a global the source does not bind)."""
    src = ("def outer(items):\n    captured_value = 10\n    shadowed_name = 1\n"
           "    def inner(extra):\n        shadowed_name = extra * 2\n"
           "        return captured_value + shadowed_name + a\n"
           "    add = lambda v: v + captured_value + a\n"
           "    return inner(3), add(4), [captured_value * x for x in items], shadowed_name\n")
    a, b, small = _both(src, a=100)
    assert a["outer"]([1, 2]) == b["outer"]([1, 2]) == (116, 114, [10, 20], 1)
    assert "captured_value" not in small and "shadowed_name" not in small


def test_nonlocal_and_global_names_are_kept():
    src = ("COUNT = 0\n\ndef counter():\n    running_total = 0\n    kept_local = 5\n"
           "    def bump():\n        nonlocal running_total\n        running_total += kept_local\n"
           "    bump()\n    bump()\n    return running_total\n\n"
           "def set_global():\n    global COUNT\n    COUNT = COUNT + 1\n    return COUNT\n")
    a, b, small = _both(src)
    assert a["counter"]() == b["counter"]() == 10 and a["set_global"]() == b["set_global"]() == 1
    assert b["COUNT"] == 1 and "running_total" in small and "kept_local" not in small


def test_comprehension_scopes():
    """The first iterable is read outside the comprehension; a walrus binds in the function. A
    comprehension's variables, and a function variable of the same name, keep their names: CPython
    3.12 inlines comprehensions into the function (PEP 709), where a new name shared with another
    local would merge two of its variables."""
    src = ("def f(items):\n    pairs_list = [1, 2]\n"
           "    same = [pairs_list * 2 for pairs_list in pairs_list]\n"
           "    nested = [[inner_v + outer_v for inner_v in items] for outer_v in items]\n"
           "    found = [last_seen := v for v in items if v]\n"
           "    gen = list(g_value for g_value in items)\n"
           "    for inner_v in items:\n        loop_only = inner_v\n"
           "    return same, nested, found, last_seen, gen, pairs_list, loop_only\n")
    a, b, small = _both(src)
    assert a["f"]([1, 2]) == b["f"]([1, 2])
    assert all(n in small for n in ("pairs_list", "inner_v", "outer_v", "g_value"))
    assert not any(n in small for n in ("last_seen", "loop_only"))


def _python(version: str) -> str | None:
    """A working python<version>: on PATH, or one pyenv installed (its shims fail outside a pyenv
    version that holds it)."""
    import glob
    import os
    import shutil
    import subprocess

    pyenv = os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")
    for candidate in (shutil.which(f"python{version}"), *sorted(glob.glob(pyenv))):
        if candidate and subprocess.run([candidate, "-c", ""], capture_output=True).returncode == 0:
            return candidate
    return None


@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_the_renaming_is_proven_or_left_out_on_other_pythons(version):
    """The packer may run on another CPython than the suite's (the GPU image has 3.12): there every pgolf
    module minifies, with its renaming proven where RENAMING_PROVEN_ON says so, and left out elsewhere."""
    import subprocess
    from pathlib import Path

    python = _python(version)
    if python is None:
        pytest.skip(f"no python{version} here (PATH, pyenv)")
    root = Path(__file__).parents[1]
    script = (  # minify.py needs only the standard library and pgolf.errors: load those two alone
        "import ast,importlib.util,sys,types,pathlib\n"
        f"root=pathlib.Path({str(root)!r})\n"
        "pg=types.ModuleType('pgolf');pg.__path__=[];sys.modules['pgolf']=pg\n"
        "err=types.ModuleType('pgolf.errors');sys.modules['pgolf.errors']=err\n"
        "exec((root/'pgolf/errors.py').read_text(),err.__dict__)\n"
        "spec=importlib.util.spec_from_file_location('m',root/'pgolf/export/minify.py')\n"
        "m=importlib.util.module_from_spec(spec);spec.loader.exec_module(m)\n"
        "n=0\n"
        "for p in sorted([*root.glob('pgolf/**/*.py'),*root.glob('kernels/**/*.py')]):\n"
        " compile(m.minify(p.read_text(),str(p)),str(p),'exec');n+=1\n"
        "print(sys.version_info[:2] in m.RENAMING_PROVEN_ON,n)\n")
    proc = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=300)
    # on a proven version a failed proof raises (a minifier bug); elsewhere it keeps the module's names
    assert proc.returncode == 0, proc.stderr[-2000:]
    proven, modules = proc.stdout.split()
    assert int(modules) > 100 and proven == str(version == "3.12")


def test_decorated_functions_and_what_they_hold_are_untouched():
    src = ("def deco(fn):\n    return fn\n\n@deco\ndef kernel(x):\n    kept_name = x + 1\n"
           "    def nested_fn():\n        inner_kept = kept_name\n        return inner_kept\n    return nested_fn()\n\n"
           "class Box:\n    @staticmethod\n    def plain(x):\n"
           "        renamed_local = x * 2\n        return renamed_local\n")
    a, b, small = _both(src)
    assert a["kernel"](1) == b["kernel"](1) == 2 and b["Box"].plain(3) == 6
    assert "kept_name" in small and "inner_kept" in small and "renamed_local" not in small
    assert b["kernel"].__code__.co_varnames == a["kernel"].__code__.co_varnames


def test_class_bodies_keep_their_names():
    src = ("def make():\n    class_local = 3\n    class Inner:\n        long_attribute = class_local\n"
           "        doubled = long_attribute * 2\n        def method(self):\n            method_local = self.doubled\n"
           "            return method_local\n    return Inner\n")
    a, b, small = _both(src)
    inner = b["make"]()
    assert (inner.long_attribute, inner.doubled, inner().method()) == (3, 6, 6)
    assert "class_local" in small and "method_local" not in small  # a class body reads it: kept


def test_functions_that_read_their_names_dynamically_are_untouched():
    src = ("def f():\n    long_variable = 3\n    other_one = 4\n    return sorted(locals())\n\n"
           "def g(code):\n    visible_name = 5\n    return eval(code)\n\n"
           "def h():\n    some_value = 1\n    return sorted(vars())\n")
    a, b, small = _both(src)
    assert a["f"]() == b["f"]() == ["long_variable", "other_one"]
    assert a["g"]("visible_name + 1") == b["g"]("visible_name + 1") == 6 and b["h"]() == ["some_value"]


def test_module_level_names_are_kept():
    src = "module_value = [v for v in range(3)]\nfor loop_var in range(2):\n    pass\n"
    a, b, small = _both(src)
    assert b["module_value"] == [0, 1, 2] and b["loop_var"] == 1 and "module_value" in small


def test_new_names_avoid_module_level_names():
    """CPython 3.11 compiles `a.f()` as a plain attribute call when the module imports an `a`."""
    src = "import math as a\n\ndef f():\n    long_list = []\n    long_list.append(1)\n    return long_list\n"
    a, b, small = _both(src)
    assert a["f"]() == b["f"]() and "long_list" not in small and "b.append(1)" in small


def test_the_renaming_check_catches_a_wrong_renaming():
    """check_renaming compares compiled code: a local renamed onto a global, or two locals merged, fails."""
    from pgolf.export.minify import check_renaming

    before = ast.parse("def f(x):\n    first = x\n    second = len(x)\n    return first, second\n")
    for wrong in ("def f(x):\n    len = x\n    second = len(x)\n    return len, second\n",
                  "def f(x):\n    a = x\n    a = len(x)\n    return a, a\n",
                  "def f(y):\n    first = y\n    second = len(y)\n    return first, second\n"):
        with pytest.raises(PgolfError, match="renaming local variables changed"):
            check_renaming(before, ast.parse(wrong), "case.py")
    check_renaming(before, ast.parse("def f(x):\n    b = x\n    a = len(x)\n    return b, a\n"), "case.py")


def test_renaming_is_reproducible_across_hash_seeds():
    """The packed bytes must not depend on the process: set order never decides a name."""
    import subprocess
    from pathlib import Path

    path = Path(__file__).parents[1] / "pgolf" / "train" / "trainer.py"
    code = f"import sys;from pgolf.export.minify import minify;sys.stdout.write(minify(open({str(path)!r}).read()))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout for seed in ("1", "2")}
    assert len(outs) == 1
