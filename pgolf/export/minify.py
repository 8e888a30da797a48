"""A semantics-preserving Python minifier (stdlib only) for the packed script (frontier-spec F8.1).

Three passes:

1. `ast` (`strip_documentation`): what only documents goes. Docstrings and other bare
   literal statements (an emptied body gets `pass`); `help=` texts of config settings and
   command-line arguments (a packed script has no `--help`); annotations of functions without
   decorators (a decorator may read them: torch.library.custom_op builds its schema from them,
   triton.jit reads `tl.constexpr`) and of local variables. Class-level annotations stay
   (dataclass fields; pgolf.config coerces values by them), so do names and asserts (Triton
   reads kernel sources, and a renamed name could be reached through getattr).
2. `ast.unparse`: comments, blank lines and the source's layout go.
3. `tokenize`: one space per indentation level, and a space between two tokens only where
   they would otherwise merge; a body of one simple statement joins its header's line.

Passes 2 and 3 change no meaning: `minify` checks that the result parses to the same AST as
the stripped tree of pass 1.
"""
from __future__ import annotations

import ast
import io
import tokenize

from pgolf.errors import PgolfError

_BODIES = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
_FSTRING_START = getattr(tokenize, "FSTRING_START", None)  # Python >= 3.12 splits f-strings into tokens
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)


def _is_literal_statement(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and not isinstance(
        node.value.value, type(...))  # `...` as a body is code style, and it is one byte less than `pass`


_HELP_CALLS = {"setting", "add_argument", "add_parser"}  # callables whose `help=` only documents
_PLAIN_DECORATORS = {"staticmethod", "classmethod", "property", "contextmanager"}  # they never read annotations


def _callee(node: ast.Call) -> str | None:
    return getattr(node.func, "id", getattr(node.func, "attr", None))


def _plain(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return all(isinstance(d, ast.Name) and d.id in _PLAIN_DECORATORS for d in fn.decorator_list)


class _Documentation(ast.NodeTransformer):
    """Help texts, and the annotations nothing reads (see the module docstring)."""

    def __init__(self) -> None:
        self.in_function = False

    def visit_Call(self, node: ast.Call) -> ast.Call:
        if _callee(node) in _HELP_CALLS:
            node.keywords = [k for k in node.keywords if not (k.arg == "help" and isinstance(
                k.value, (ast.Constant, ast.JoinedStr)))]
        return self.generic_visit(node)

    def visit_FunctionDef(self, node):
        if _plain(node):
            node.returns = None
            a = node.args
            for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg):
                if arg is not None:
                    arg.annotation = None
        outer, self.in_function = self.in_function, True
        self.generic_visit(node)
        self.in_function = outer
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.ClassDef:
        outer, self.in_function = self.in_function, False
        self.generic_visit(node)
        self.in_function = outer
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign):
        if self.in_function and node.value is not None:  # a local's annotation is never evaluated or stored
            return ast.copy_location(ast.Assign([node.target], node.value), node)
        return self.generic_visit(node)


def strip_documentation(tree: ast.AST) -> ast.AST:
    """Pass 1, in place: literal statements, help texts and unread annotations."""
    tree = _Documentation().visit(strip_literals(tree))
    return ast.fix_missing_locations(tree)


def strip_literals(tree: ast.AST) -> ast.AST:
    """Remove docstrings and other bare literal statements, in place."""
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list) or not body or not isinstance(body[0], ast.stmt):
                continue
            kept = [s for s in body if not _is_literal_statement(s)]
            if not kept and field == "body":
                kept = [ast.Pass()]
            body[:] = kept
    return tree


def _glue(prev: str, cur: str) -> str:
    """The separator two adjacent tokens need on one line."""
    if not prev or not cur:
        return ""
    a, b = prev[-1], cur[0]
    word_a = a.isalnum() or a == "_" or ord(a) > 127
    word_b = b.isalnum() or b == "_" or ord(b) > 127 or b in "'\""  # a string after a name would become a prefix
    return " " if word_a and word_b else ""


def _squeeze(source: str) -> str:
    """Minimal whitespace, token by token (tokens are copied from the source, never re-spelt)."""
    lines = source.splitlines(keepends=True)
    out: list[str] = []
    depth, line_start, prev, fstring = 0, True, "", 0
    fstart: tuple[int, int] | None = None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (_FSTRING_START, _FSTRING_END) and tok.type is not None:
            # copy a whole f-string verbatim: its inner token positions are not reliable on every version
            if tok.type == _FSTRING_START:
                fstring += 1
                fstart = fstart or tok.start
                continue
            fstring -= 1
            if fstring:
                continue
            text = _slice(lines, fstart, tok.end)
            fstart = None
        elif fstring:
            continue
        elif tok.type in _SKIP:
            continue
        elif tok.type == tokenize.INDENT:
            depth += 1
            continue
        elif tok.type == tokenize.DEDENT:
            depth -= 1
            continue
        elif tok.type == tokenize.NEWLINE:
            out.append("\n")
            line_start, prev = True, ""
            continue
        else:
            text = tok.string
        if line_start:
            out.append(" " * depth)
            line_start = False
        else:
            out.append(_glue(prev, text))
        out.append(text)
        prev = text
    return "".join(out)


def _slice(lines: list[str], start: tuple[int, int], end: tuple[int, int]) -> str:
    (r0, c0), (r1, c1) = start, end
    if r0 == r1:
        return lines[r0 - 1][c0:c1]
    return lines[r0 - 1][c0:] + "".join(lines[r0:r1 - 1]) + lines[r1 - 1][:c1]


def _join_bodies(source: str) -> str:
    """`if x:\\n y` -> `if x:y` where the body is one simple line (the next line is not deeper)."""
    lines = source.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if (line.endswith(":") and i + 1 < len(lines) and _indent(lines[i + 1]) == _indent(line) + 1
                and (i + 2 >= len(lines) or _indent(lines[i + 2]) <= _indent(line))
                and not _compound(lines[i + 1].lstrip(" "))):
            out.append(line + lines[i + 1].lstrip(" "))
            i += 2
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


_COMPOUND = ("if", "for", "while", "with", "try", "def", "class", "async", "match", "elif", "else", "except",
             "finally", "@")


def _compound(stmt: str) -> bool:
    head = stmt.split(" ", 1)[0].split("(", 1)[0].split(":", 1)[0]
    return head in _COMPOUND or stmt.startswith("@")


def minify(source: str, name: str = "<source>") -> str:
    """`source` minified; raises PgolfError if the result does not mean the same as the stripped source."""
    try:
        tree = strip_documentation(ast.parse(source, filename=name))
    except SyntaxError as e:
        raise PgolfError(f"{name}: cannot minify, not valid Python ({e})") from None
    out = _join_bodies(_squeeze(ast.unparse(tree))).rstrip("\n") + "\n"
    try:
        same = ast.dump(ast.parse(out)) == ast.dump(tree)
    except SyntaxError:
        same = False
    if not same:
        raise PgolfError(f"{name}: the minified source does not parse to the same program (a minifier bug)")
    return out
