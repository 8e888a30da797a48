"""The packer's short error messages (pgolf.export.messages): `file:line` and the values, in the packed copy only."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pgolf import __version__
from pgolf.config import load_config
from pgolf.errors import PgolfError
from pgolf.export.messages import BUILTIN_MESSAGE_FIRST, message_readers, shorten, shorten_files
from pgolf.export.minify import minify
from pgolf.export.pack import code_files, pack
from pgolf.export.trace import ROOTS, archive_name, import_closure

REPO = Path(__file__).resolve().parents[1]


def short(body: str, name: str = "pgolf/m.py") -> str:
    return shorten(body, name, BUILTIN_MESSAGE_FIRST | {"PgolfError"})  # as if pgolf/errors.py were packed with it


def test_a_literal_message_becomes_the_sites_code():
    assert short('def f():\n    raise ValueError("a long explanation")\n') == \
        "def f():\n    raise ValueError('pgolf/m.py:2')\n"


def test_an_fstring_keeps_its_values_conversions_and_specs_in_order():
    src = 'raise PgolfError(f"config {key}: must be positive, got {v!r} ({x:.3f}, {y!s:>{w}})")\n'
    assert short(src, "pgolf/config.py") == \
        "raise PgolfError(f'pgolf/config.py:1 {key} {v!r} {x:.3f} {y!s:>{w}}')\n"
    assert short('raise ValueError(f"no values here")\n') == "raise ValueError('pgolf/m.py:1')\n"


def test_cause_type_other_arguments_and_keywords_stay():
    src = ("try:\n    pass\nexcept OSError as e:\n    raise KeyError(f'{p}: unreadable', 3, flag=True) from e\n"
           "raise errors.PgolfError('x') from None\n")
    assert short(src).splitlines()[3:] == ["    raise KeyError(f'pgolf/m.py:4 {p}', 3, flag=True) from e",
                                           "raise errors.PgolfError('pgolf/m.py:5') from None"]


def test_a_nested_fstring_is_kept_whole_as_a_value():
    src = '''raise ValueError(f"bad keys {', '.join(f'{k}={v!r}' for k, v in d.items())}; expected {want}")\n'''
    out = short(src)
    assert out == '''raise ValueError(f"pgolf/m.py:1 {', '.join((f'{k}={v!r}' for k, v in d.items()))} {want}")\n'''
    d, want = {"a": 1}, "b"
    with pytest.raises(ValueError) as e:
        exec(out)
    assert str(e.value) == "pgolf/m.py:1 a=1 b"


def test_what_is_not_a_literal_message_stays():
    src = ('import warnings\n'
           'def f(x, msg):\n'
           '    s = "a long explanation"\n'
           '    warnings.warn(f"a warning about {x}")\n'
           '    print(f"progress {x}")\n'
           '    log.event("export", note="plain text")\n'
           '    if x:\n'
           '        raise ValueError("prefix " + str(x))\n'
           '    if msg:\n'
           '        raise ValueError(msg)\n'
           '    raise ValueError("{} is wrong".format(x))\n'
           '    raise ValueError("%s is wrong" % x)\n'
           '    raise ValueError(f"{x}" if x else "none")\n'
           '    raise ValueError\n'
           '    raise ValueError()\n'
           '    raise\n')
    assert short(src) == src


def test_lines_and_positions_come_from_the_readable_source():
    src = ('raise ValueError(\n'
           '    "two "\n'
           '    f"lines {x}"\n'
           ')\n'
           's = "héllo"; raise ValueError("é after non-ASCII")  # UTF-8 columns\n'
           'assert x, f"asserted {x!r}"\n')
    assert short(src) == ("raise ValueError(\n    f'pgolf/m.py:1 {x}'\n)\n"
                          "s = \"héllo\"; raise ValueError('pgolf/m.py:5')  # UTF-8 columns\n"
                          "assert x, f'pgolf/m.py:6 {x!r}'\n")


def test_only_exceptions_whose_first_argument_is_the_message():
    src = ('class Plain(PgolfError):\n    pass\n'
           'class Own(PgolfError):\n    def __init__(self, path, fault):\n'
           '        super().__init__(f"{path}: {fault}")\n'
           'def _unknown(key):\n    return PgolfError(f"unknown setting {key!r}")\n'
           'raise Plain("prose")\n'
           'raise Own("some/path", "prose")\n'
           'raise _unknown(f"{a}.{b}")\n'
           'raise UnicodeDecodeError("utf-8", b"x", 0, 1, "reason")\n'
           'raise PgolfError("prose")\n')
    out = shorten_files({"pgolf/errors.py": "class PgolfError(Exception):\n    pass\n", "pgolf/m.py": src})
    lines = out["pgolf/m.py"].splitlines()
    assert lines[7] == "raise Plain('pgolf/m.py:8')"  # a subclass of a class defined in another file
    assert lines[8:11] == src.splitlines()[8:11]  # own constructor, a factory, data first: their arguments stay
    assert lines[11] == "raise PgolfError('pgolf/m.py:12')"
    assert shorten(src, "pgolf/m.py").splitlines()[11] == 'raise PgolfError("prose")'  # alone, PgolfError is unknown


def test_exceptions_with_generated_constructors_or_reading_args_keep_their_arguments():
    """A dataclass's fields make its own constructor; a class that reads `args` may take data first."""
    src = ('@dataclass\nclass Fields(PgolfError):\n    path: str\n'
           'class Reads(PgolfError):\n    @property\n    def path(self):\n        return self.args[0]\n'
           'raise Fields("some/path")\n'
           'raise Reads("some/path")\n')
    out = shorten_files({"pgolf/errors.py": "class PgolfError(Exception):\n    pass\n", "pgolf/m.py": src})
    assert out["pgolf/m.py"] == src


def test_triton_kernel_bodies_stay():
    src = ('@triton.jit\ndef k(x):\n    assert x, "in a kernel"\n'
           '@triton.autotune(configs=[], key=[])\n@triton.jit\ndef k2(x):\n    raise ValueError("x")\n'
           'def host(x):\n    assert x, "on the host"\n')
    out = short(src).splitlines()
    assert out[:7] == src.splitlines()[:7] and out[8] == "    assert x, 'pgolf/m.py:9'"


def test_not_python_is_refused():
    with pytest.raises(PgolfError, match="bad.py: cannot shorten its messages, not valid Python"):
        shorten("def f(:\n", "bad.py")


READERS = {
    "in": 'try:\n    f()\nexcept ValueError as e:\n    if "shape" in str(e):\n        pass\n',
    "eq": 'try:\n    f()\nexcept ValueError as e:\n    ok = e.args[0] == "x"\n',
    "method": 'try:\n    f()\nexcept ValueError as exc:\n    ok = repr(exc).startswith("x")\n',
    "re": 'import re\ntry:\n    f()\nexcept ValueError as e:\n    m = re.search("x", str(e))\n',
    "later": 'def g():\n    try:\n        f()\n    except ValueError as e:\n        text = str(e)\n'
             '    return text.endswith("!")\n',
}
DISPLAYS = {
    "fstring": 'try:\n    f()\nexcept ValueError as e:\n    raise PgolfError(f"{p}: {e}") from None\n',
    "first line": 'try:\n    f()\nexcept ValueError as e:\n    raise PgolfError(f"({str(e).splitlines()[0]})")\n',
    "carried": 'def g():\n    try:\n        f()\n    except PgolfError as e:\n        out = str(e)\n'
               '    if isinstance(out, str) and out is not None:\n        raise PgolfError(out)\n',
}


@pytest.mark.parametrize("case", sorted(READERS))
def test_code_that_reads_a_message_is_found(case):
    assert message_readers(READERS[case], "r.py")


@pytest.mark.parametrize("case", sorted(DISPLAYS))
def test_code_that_only_shows_a_message_is_not(case):
    assert message_readers(DISPLAYS[case], "d.py") == []


def test_nothing_in_the_package_decides_on_a_message_text():
    """Shortened messages change no behaviour only while no handler compares or matches a message."""
    files = [p for root in ROOTS.values() for p in sorted(root.rglob("*.py"))]
    assert len(files) > 100
    assert [hit for p in files for hit in message_readers(p.read_text(encoding="utf-8"), str(p))] == []


def test_every_module_of_every_option_shortens_minifies_and_compiles():
    closure = import_closure()  # no config: every option on
    readable = {archive_name(m, p): p.read_text(encoding="utf-8") for m, p in closure.modules.items()}
    out = shorten_files(readable)
    changed = 0
    for name, text in out.items():
        small = minify(text, name)
        compile(small, name, "exec")
        changed += text != readable[name]
    assert changed > 40
    assert "raise PgolfError(f'pgolf/config.py:" in out["pgolf/config.py"]


def test_the_packer_alone_shortens_and_the_package_keeps_its_messages():
    cfg = load_config("record_1855", env={})
    assert "pgolf.export.messages" not in import_closure(cfg).modules  # a packer tool, not counted
    _, readable, _ = code_files(cfg)
    assert 'must be one of' in readable["pgolf/config.py"]  # code_files reads the package's own text


@pytest.fixture(scope="module")
def packed_smoke_script(tmp_path_factory):
    path = tmp_path_factory.mktemp("packed") / "train_gpt.py"
    path.write_bytes(pack(load_config("smoke", env={})).script)
    return path


@pytest.mark.parametrize("override,code,value", [
    ("model.num_layers=abc", "pgolf/config.py:", "model.num_layers 'abc' int"),
    ("data.tokenizer=/nowhere/tok.model", "pgolf/data/tokenizer.py:", "/nowhere/tok.model"),
])
def test_a_packed_run_names_the_site_and_the_value(packed_smoke_script, tmp_path, override, code, value):
    r = subprocess.run([sys.executable, "-I", str(packed_smoke_script), override, f"run.out_dir={tmp_path}",
                        "run.progress=false"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and not r.stdout, r.stderr[-2000:]
    first, note = r.stderr.strip().splitlines()[-2:]
    assert first.startswith(f"train_gpt.py: error: {code}") and first.endswith(value), first
    assert "shortened" in note and f"pgolf {__version__} source" in note
    site, line = first.removeprefix("train_gpt.py: error: ").split(" ", 1)[0].split(":")
    assert "raise PgolfError(" in (REPO / site).read_text(encoding="utf-8").splitlines()[int(line) - 1]
