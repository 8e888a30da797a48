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
    """minify() itself checks that the result parses to the stripped tree; every shipped file passes."""
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
