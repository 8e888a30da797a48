"""Short error messages for the packed script: `raise E("prose {x}")` -> `raise E("pgolf/a.py:12 {x}")`.

The prose of error messages is about 8 % of a packed `train_gpt.py`'s compressed bytes, and every
byte of code costs a competitor a byte of weights. In the packed copy only (the package keeps its
messages), the message of `raise E(<message>)` (with or without `from ...`) and of
`assert test, <message>` becomes the site's code, `<archive path>:<source line>`, followed by the
values the message formats (every `{expr}`, with its conversion and format spec, in order,
separated by a space): the file, field, flag or number it names still appears, and the full text
is at that line of the pgolf source. Only a message that is a string literal or an f-string is
shortened; one built by concatenation or a call, the exception's type, its other arguments and
every other line stay as they are.

Which calls hold a message: `E` must be an exception class whose first argument is its message
(`message_first`): a builtin exception (not the Unicode errors or StopIteration, whose first
argument is data), or a class of the packed files that defines no `__init__`, `__new__`, `__str__`
or `__repr__` and whose bases all are such classes. A factory (`raise _unknown("key", ...)`) or an
exception with its own constructor (`ShardError(path, fault)`) keeps its arguments. Bodies of
Triton kernels (`@triton.jit`, `autotune`, `heuristics`) are left alone: Triton compiles their
source itself.

That is only safe while nothing decides on a message's text at run time: `message_readers`
finds an `except ... as e` whose code compares or matches the text of `e` (tests check the
package has none).
"""
from __future__ import annotations

import ast
import builtins

from pgolf.errors import PgolfError
from pgolf.export.minify import parses_to

_KERNEL_DECORATORS = {"jit", "autotune", "heuristics"}  # triton.*: Triton reads these functions' source
_DATA_FIRST = {"UnicodeDecodeError", "UnicodeEncodeError", "UnicodeTranslateError", "StopIteration",
               "StopAsyncIteration"}  # builtin exceptions whose first argument is not a message
BUILTIN_MESSAGE_FIRST = frozenset(
    n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, Exception) and n not in _DATA_FIRST)
_OWN_TEXT = {"__init__", "__new__", "__str__", "__repr__"}  # a class defining one may not read args[0] as its message
_TEXT_METHODS = {"startswith", "endswith", "find", "index", "count", "rfind", "rindex", "__contains__"}
_MATCHERS = {"match", "fullmatch", "search", "findall", "finditer", "sub", "split", "fnmatch"}


def shorten_files(files: dict[str, str]) -> dict[str, str]:
    """The packed files (archive path -> text) with the messages of their `.py` files shortened; the
    exception classes they define are known to each other (`message_first`)."""
    sources = {name: text for name, text in files.items() if name.endswith(".py")}
    exceptions = message_first(sources)
    return {name: shorten(text, name, exceptions) if name in sources else text for name, text in files.items()}


def message_first(sources: dict[str, str]) -> frozenset[str]:
    """Names of the exception classes whose first argument is their message: the builtin ones, and the
    classes of `sources` (archive path -> text) without their own constructor or text whose bases are
    all such classes (a name defined twice counts only if every definition qualifies)."""
    classes: dict[str, list[ast.ClassDef]] = {}
    for name, text in sources.items():
        for node in ast.walk(ast.parse(text, filename=name)):
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, []).append(node)
    known = set(BUILTIN_MESSAGE_FIRST) - set(classes)
    grew = True
    while grew:  # a class qualifies once all its bases do
        grew = False
        for cls, defs in classes.items():
            if cls not in known and all(_plain_exception(d, known) for d in defs):
                known.add(cls)
                grew = True
    return frozenset(known)


def _plain_exception(node: ast.ClassDef, known: set[str]) -> bool:
    """No constructor or text of its own, written or generated (a decorator such as @dataclass, fields),
    and nothing in it reads `args`."""
    own = {getattr(s, "name", None) for s in node.body}
    reads_args = any(isinstance(n, ast.Attribute) and n.attr == "args" for n in ast.walk(node))
    return bool(node.bases) and not node.keywords and not node.decorator_list and not own & _OWN_TEXT and not any(
        isinstance(s, ast.AnnAssign) for s in node.body) and not reads_args and all(_name(b) in known for b in node.bases)


def shorten(source: str, name: str, exceptions: frozenset[str] | None = None) -> str:
    """`source` (the file `name`, its archive path) with its raise and assert messages shortened.

    `exceptions`: the classes whose first argument is a message (`message_first`; default: those of
    `source` alone). Only the messages' text changes (spliced in place); the result is checked to
    parse to the original program with those messages replaced, or PgolfError is raised (a bug here)."""
    try:
        tree = ast.parse(source, filename=name)
    except SyntaxError as e:
        raise PgolfError(f"{name}: cannot shorten its messages, not valid Python ({e})") from None
    if exceptions is None:
        exceptions = message_first({name: source})
    edits = []
    for holder, field, message, line in _sites(tree, exceptions):
        short = short_message(message, f"{name}:{line}")
        if short is not None:
            edits.append((message, ast.unparse(short)))
            if field == "args":
                holder.args[0] = short
            else:
                setattr(holder, field, short)
    out = _splice(source, edits)
    if not parses_to(out, tree):
        raise PgolfError(f"{name}: shortening its messages changed more than the messages (a packer bug)")
    return out


def short_message(message: ast.expr, code: str) -> ast.expr | None:
    """The short form of a message node (`code` then the f-string's values), or None to keep it:
    only a string literal or an f-string is shortened."""
    if isinstance(message, ast.Constant) and isinstance(message.value, str):
        return ast.Constant(code)
    if not isinstance(message, ast.JoinedStr):
        return None
    values = [v for v in message.values if isinstance(v, ast.FormattedValue)]
    if not values:
        return ast.Constant(code)
    parts: list[ast.expr] = []
    for i, value in enumerate(values):
        parts += [ast.Constant(f"{code} " if i == 0 else " "), value]  # constants never adjacent: as parsed
    return ast.JoinedStr(parts)


def _sites(tree: ast.AST, exceptions: frozenset[str]):
    """(node holding the message, its field, the message, the statement's line) of each message of a
    raised `exceptions` class or an assert, outside Triton kernels."""
    found = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                _name(d.func if isinstance(d, ast.Call) else d) in _KERNEL_DECORATORS for d in node.decorator_list):
            return
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and _name(node.exc.func) in exceptions \
                and node.exc.args and not isinstance(node.exc.args[0], ast.Starred):
            found.append((node.exc, "args", node.exc.args[0], node.lineno))
        elif isinstance(node, ast.Assert) and node.msg is not None:
            found.append((node, "msg", node.msg, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _name(node: ast.expr) -> str | None:
    """`f` of `f` and `a.f`."""
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None


def _splice(source: str, edits: list[tuple[ast.expr, str]]) -> str:
    """`source` with each node's text replaced (AST columns are UTF-8 byte offsets)."""
    lines = source.split("\n")  # as Python counts lines (str.splitlines also splits at \x0c, \x1c, U+2028, ...)
    lines = [line + "\n" for line in lines[:-1]] + lines[-1:]
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(lineno: int, col: int) -> int:
        return starts[lineno - 1] + len(lines[lineno - 1].encode("utf-8")[:col].decode("utf-8"))

    out = source
    for node, text in sorted(edits, key=lambda e: (e[0].lineno, e[0].col_offset), reverse=True):
        a, b = offset(node.lineno, node.col_offset), offset(node.end_lineno, node.end_col_offset)
        out = out[:a] + text + out[b:]
    return out


def message_readers(source: str, name: str = "<source>") -> list[str]:
    """`name:line` of each `except ... as e` whose code decides on the text of `e`: `e`, `str(e)`,
    `e.args`, or a name the handler assigns from them, compared (other than by `is`), matched
    (`re.*`, `fnmatch`) or searched (`.startswith`, `.find`, ...) in the handler, or later in the
    function (or module) holding it. Shortened messages would change what such code does;
    displaying a message (`f"... {e}"`, `raise E(str(e))`) is fine."""
    tree = ast.parse(source, filename=name)
    found = []
    for scope in ast.walk(tree):
        if not isinstance(scope, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        for handler in _own_nodes(scope):
            if not isinstance(handler, ast.ExceptHandler) or not handler.name:
                continue
            tainted = {handler.name}
            for node in ast.walk(ast.Module(handler.body, [])):  # s = str(e), msg = e.args[0], ...
                if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and node.value is not None \
                        and _mentions(node.value, tainted):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    tainted |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            where = handler.body if tainted == {handler.name} else list(_own_nodes(scope))
            if any(_reads_text(node, tainted) for node in _walk_all(where)):
                found.append(f"{name}:{handler.lineno}")
    return found


def _own_nodes(scope: ast.AST):
    """The nodes of a scope, not those of the functions defined in it."""
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))


def _walk_all(nodes):
    for node in nodes:
        yield from ast.walk(node)


def _mentions(node: ast.AST, names: set[str]) -> bool:
    return any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(node))


def _reads_text(node: ast.AST, names: set[str]) -> bool:
    if isinstance(node, ast.Compare) and not all(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops):
        return _mentions(node, names)
    if isinstance(node, ast.Call):
        callee = getattr(node.func, "attr", getattr(node.func, "id", None))
        if callee in _TEXT_METHODS and isinstance(node.func, ast.Attribute):
            return _mentions(node.func.value, names) or any(_mentions(a, names) for a in node.args)
        if callee in _MATCHERS:
            return any(_mentions(a, names) for a in node.args)
    return False
