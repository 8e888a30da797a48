"""A semantics-preserving Python minifier (stdlib only) for the packed script (frontier-spec F8.1).

Four passes:

1. `ast` (`strip_documentation`): what only documents goes. Docstrings and other bare
   literal statements (an emptied body gets `pass`); `help=` texts of config settings and
   command-line arguments (a packed script has no `--help`); annotations of functions whose
   decorators only call them (`_PLAIN_DECORATORS`; others may read them: torch.library.custom_op
   builds its schema from them, triton.jit reads `tl.constexpr`) and of local variables. Class-level annotations stay
   (dataclass fields; pgolf.config coerces values by them), so do asserts.
2. `ast` (`rename_locals`): local variables of functions get short names (a, b, ... by use
   count), where nothing can read them by their spelling: never parameters (callers may pass
   them by keyword), module-level or class-body names (a renamed one could be reached through
   getattr), names in annotations or `global`/`nonlocal`, comprehension variables and function
   variables that share their name (CPython 3.12 inlines comprehensions), nor anything inside a
   function with a decorator that may read code (Triton reads kernel sources) or one that names
   `locals`, `vars`, `eval`, `exec` or `dir`, nor in a module that reads frames or code objects.
   A new name is never one the function's code spells or the module binds. `check_renaming`
   proves that each module compiles to the same code up to that renaming; on a Python where
   that proof is not established (`RENAMING_PROVEN_ON`), a module it fails for keeps its names.
3. `ast.unparse`: comments, blank lines and the source's layout go.
4. `tokenize`: one space per indentation level, and a space between two tokens only where
   they would otherwise merge; a body of one simple statement joins its header's line.

Passes 3 and 4 change no meaning: `minify` checks that the result parses to the same AST as
the renamed tree of pass 2.
"""
from __future__ import annotations

import ast
import copy
import dis
import inspect
import io
import itertools
import keyword
import string
import sys
import tokenize
import types

from pgolf.errors import PgolfError

_BODIES = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
_FSTRING_START = getattr(tokenize, "FSTRING_START", None)  # Python >= 3.12 splits f-strings into tokens
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)


def _is_literal_statement(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and not isinstance(
        node.value.value, type(...))  # `...` as a body is code style, and it is one byte less than `pass`


_HELP_CALLS = {"setting", "add_argument", "add_parser"}  # callables whose `help=` only documents
_PLAIN_DECORATORS = {  # wrappers that only call the function: they never read its code, names or annotations
    "staticmethod", "classmethod", "property", "contextmanager", "contextlib.contextmanager", "torch.no_grad",
    "torch.inference_mode", "cache", "functools.cache", "lru_cache", "functools.lru_cache"}


def _callee(node: ast.Call) -> str | None:
    return getattr(node.func, "id", getattr(node.func, "attr", None))


def _decorator_name(node: ast.expr) -> str:
    node = node.func if isinstance(node, ast.Call) else node
    return ast.unparse(node)


def _plain(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """No decorator that may read the function (custom_op reads annotations, triton.jit its source)."""
    return all(_decorator_name(d) in _PLAIN_DECORATORS for d in fn.decorator_list)


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


# Pass 2: local names (see the module docstring).

_PLAIN_CLASS_DECORATORS = {"dataclass", "dataclasses.dataclass"}  # they read class annotations only
_DYNAMIC = {"locals", "vars", "eval", "exec", "dir"}  # they reach a frame's names by their spelling
_FRAME_READERS = ("f_locals", "_getframe", "currentframe", "getsource", "getframeinfo", "co_varnames")


def _short_names():
    """a, b, ..., Z, aa, ab, ...: the candidates for new names, shortest first."""
    first = string.ascii_letters
    for size in range(1, 4):
        for name in map("".join, itertools.product(first, *[first + string.digits + "_"] * (size - 1))):
            if not keyword.iskeyword(name) and not keyword.issoftkeyword(name):
                yield name


class _Scope:
    def __init__(self, kind: str, parent: _Scope | None, frozen: bool) -> None:
        self.kind, self.parent, self.frozen = kind, parent, frozen  # frozen: nothing in it is renamed
        self.children: list[_Scope] = []
        self.bound: set[str] = set()
        self.declared: dict[str, str] = {}  # name -> "global" | "nonlocal"
        self.uses: list[_Use] = []
        if parent is not None:
            parent.children.append(self)

    def subtree(self):
        yield self
        for child in self.children:
            yield from child.subtree()

    def function(self) -> _Scope:
        """The scope a walrus binds in: the nearest one that is not a comprehension."""
        return self.parent.function() if self.kind == "comp" else self


class _Use:
    """One spelling of a name: `node.field` holds it; pinned: it must keep its spelling."""

    def __init__(self, node, field: str, name: str, pinned: bool) -> None:
        self.node, self.field, self.name, self.pinned = node, field, name, pinned

    def rename(self, new: str) -> None:
        setattr(self.node, self.field, new)


class _Scopes(ast.NodeVisitor):
    """The scope tree of a module, with each name's spellings in the scope they occur in."""

    def __init__(self) -> None:
        self.module = self.scope = _Scope("module", None, False)
        self.pin = False  # inside an annotation: its text may be kept as a string

    def use(self, node, field: str, name: str, binds: bool, pinned: bool = False, where: _Scope | None = None):
        self.scope.uses.append(_Use(node, field, name, pinned or self.pin))
        if binds:
            (where or self.scope).bound.add(name)

    def enter(self, kind: str, frozen: bool, visit) -> None:
        outer, self.scope = self.scope, _Scope(kind, self.scope, frozen or self.scope.frozen)
        visit()
        self.scope = outer

    def annotation(self, node: ast.expr | None) -> None:
        if node is not None:
            outer, self.pin = self.pin, True
            self.visit(node)
            self.pin = outer

    def arguments(self, a: ast.arguments) -> None:
        """Defaults and annotations belong to the enclosing scope."""
        for d in (*a.defaults, *a.kw_defaults):
            if d is not None:
                self.visit(d)
        for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg):
            if arg is not None:
                self.annotation(arg.annotation)

    def parameters(self, a: ast.arguments) -> None:
        for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg):
            if arg is not None:
                self.use(arg, "arg", arg.arg, binds=True, pinned=True)

    def visit_FunctionDef(self, node) -> None:
        self.use(node, "name", node.name, binds=True, pinned=True)  # a function's name is its __name__
        for d in node.decorator_list:
            self.visit(d)
        self.arguments(node.args)
        self.annotation(node.returns)
        frozen = not _plain(node)
        frozen = frozen or bool(getattr(node, "type_params", None))

        def body():
            self.parameters(node.args)
            for s in node.body:
                self.visit(s)
        self.enter("function", frozen, body)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.arguments(node.args)

        def body():
            self.parameters(node.args)
            self.visit(node.body)
        self.enter("function", False, body)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.use(node, "name", node.name, binds=True, pinned=True)
        for child in (*node.decorator_list, *node.bases, *node.keywords):
            self.visit(child)
        frozen = any(_decorator_name(d) not in _PLAIN_CLASS_DECORATORS for d in node.decorator_list)
        frozen = frozen or bool(getattr(node, "type_params", None))
        self.enter("class", frozen, lambda: [self.visit(s) for s in node.body])

    def _comprehension(self, node, *results: ast.expr) -> None:
        self.visit(node.generators[0].iter)  # the first iterable is evaluated outside

        def body():
            for i, g in enumerate(node.generators):
                self.visit(g.target)
                if i:
                    self.visit(g.iter)
                for cond in g.ifs:
                    self.visit(cond)
            for r in results:
                self.visit(r)
        self.enter("comp", False, body)

    def visit_ListComp(self, node) -> None:
        self._comprehension(node, node.elt)

    visit_SetComp = visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension(node, node.key, node.value)

    def visit_Name(self, node: ast.Name) -> None:
        self.use(node, "id", node.id, binds=not isinstance(node.ctx, ast.Load))

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        t = node.target
        self.use(t, "id", t.id, binds=True, where=self.scope.function())

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.annotation(node.annotation)
        for child in (node.target, node.value):
            if child is not None:
                self.visit(child)

    def visit_alias(self, node: ast.alias) -> None:
        if node.name == "*":
            return
        if node.asname is not None:
            self.use(node, "asname", node.asname, binds=True)
        else:  # `import a.b` binds `a` to the package: `as` would bind the submodule instead
            self.use(node, "asname", node.name.split(".")[0], binds=True, pinned="." in node.name)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name is not None:
            self.use(node, "name", node.name, binds=True)
        for s in node.body:
            self.visit(s)

    def visit_Global(self, node) -> None:
        kind = "global" if isinstance(node, ast.Global) else "nonlocal"
        for name in node.names:
            self.scope.declared[name] = kind
            self.use(node, "names", name, binds=False, pinned=True)

    visit_Nonlocal = visit_Global

    def generic_visit(self, node: ast.AST) -> None:
        for field in ("name", "rest"):  # match-statement captures
            name = getattr(node, field, None) if isinstance(node, ast.pattern) else None
            if isinstance(name, str):
                self.use(node, field, name, binds=True, pinned=True)
        super().generic_visit(node)


def _resolve(scope: _Scope, name: str) -> tuple[_Scope | None, bool]:
    """The scope whose variable `name` means in `scope` (None: a global) and whether a
    `nonlocal` on the way pins it."""
    s, pinned, here = scope, False, True
    while s is not None and s.kind != "module":
        if s.kind == "class" and not here:  # a class body's names are invisible to the scopes inside it
            s = s.parent
            continue
        kind = s.declared.get(name)
        if kind == "global":
            return None, pinned
        if kind is None and name in s.bound:
            return s, pinned
        pinned = pinned or kind == "nonlocal"
        s, here = s.parent, False
    return None, pinned


def _freeze_dynamic(module: _Scope) -> None:
    """A function that names locals/vars/eval/exec/dir keeps every name in it."""
    for s in module.subtree():
        if s.kind == "function" and not s.frozen and any(u.name in _DYNAMIC for t in s.subtree() for u in t.uses):
            for t in s.subtree():
                t.frozen = True


def _variables(module: _Scope) -> dict[tuple[int, str], list]:
    """(id of scope, name) -> [scope, uses, pinned] for every variable bound in a function or comprehension."""
    found: dict[tuple[int, str], list] = {}
    for s in module.subtree():
        for u in s.uses:
            owner, pinned = _resolve(s, u.name)
            if owner is None:
                continue
            entry = found.setdefault((id(owner), u.name), [owner, [], False])
            entry[1].append(u)
            entry[2] = entry[2] or pinned or u.pinned or s.frozen or s.kind == "class" or owner.frozen
    return found


def _renamable(owner: _Scope, name: str, pinned: bool) -> bool:
    """A comprehension's variables keep their names: CPython 3.12 inlines list, set and dict
    comprehensions into the enclosing function (PEP 709), so a new name shared with one of the
    function's variables would merge two of its locals (same meaning, but no longer provably so)."""
    return not (pinned or name.startswith("__")) and owner.kind == "function"


def rename_locals(tree: ast.Module) -> ast.Module:
    """Pass 2, in place: short names for the local variables that nothing reads by name."""
    if any(isinstance(n, ast.Attribute) and n.attr in _FRAME_READERS or isinstance(n, ast.Name)
           and n.id in _FRAME_READERS for n in ast.walk(tree)):
        return tree  # it reads frames or code: a caller's names may be read by their spelling
    visitor = _Scopes()
    visitor.visit(tree)
    module = visitor.module
    _freeze_dynamic(module)
    variables = _variables(module)
    new_of: dict[int, str] = {}  # id(use) -> the use's new name
    order = {id(s): i for i, s in enumerate(module.subtree())}
    by_scope: dict[int, list] = {}
    comp_names = _comprehension_names(module)
    for (_, name), (owner, uses, pinned) in variables.items():
        if _renamable(owner, name, pinned) and name not in comp_names.get(id(owner), ()):
            by_scope.setdefault(id(owner), [owner, []])[1].append((name, uses))
    for key in sorted(by_scope, key=order.__getitem__):  # outer scopes first
        owner, names = by_scope[key]
        _name_scope(owner, names, new_of, module.bound)
    for s in module.subtree():
        for u in s.uses:
            if id(u) in new_of:
                u.rename(new_of[id(u)])
    return tree


def _comprehension_names(module: _Scope) -> dict[int, set[str]]:
    """id(function scope) -> the names its comprehensions bind. Since 3.12 they share the function's
    locals (PEP 709), so a function variable of the same name keeps it too."""
    out: dict[int, set[str]] = {}
    for s in module.subtree():
        if s.kind == "comp" and s.parent.function().kind == "function":
            out.setdefault(id(s.parent.function()), set()).update(s.bound)
    return out


def _name_scope(owner: _Scope, names: list, new_of: dict[int, str], module_names: set[str]) -> None:
    """New names for `owner`'s variables, most used first, unlike any name spelt in its subtree
    and any module-level name (CPython 3.11 compiles `x.f()` differently when `x` is imported there).
    A name bound by a plain `import x` keeps its spelling (`import x as a` is longer)."""
    inner = [u for s in owner.subtree() for u in s.uses]
    taken = module_names | {u.name for u in inner} | {new_of[id(u)] for u in inner if id(u) in new_of}
    fresh = (n for n in _short_names() if n not in taken)
    new = next(fresh)
    for name, uses in sorted(names, key=lambda nu: -len(nu[1])):
        if len(new) > len(name) or any(isinstance(u.node, ast.alias) and u.node.asname is None for u in uses):
            continue
        for u in uses:
            new_of[id(u)] = new
        new = next(fresh)


_NAME_OPS = frozenset(dis.haslocal) | frozenset(dis.hasfree)  # instructions naming a local, cell or free variable


def check_renaming(before: ast.Module, after: ast.Module, name: str) -> None:
    """Raise PgolfError unless `after` compiles to `before`'s code up to a renaming of local variables.

    Compared code object by code object: the same instructions, constants, global and attribute
    names, parameters, names and flags; local, cell and free variables renamed one-to-one, and
    consistently with the enclosing code's cells. A new name that captured another binding
    (a global, an outer variable) would change an instruction or break the one-to-one map."""
    try:
        a, b = (compile(t, name, "exec", dont_inherit=True) for t in (before, after))
    except (SyntaxError, ValueError) as e:
        raise PgolfError(f"{name}: cannot minify, not valid Python ({e})") from None
    where = _renaming_differs(a, b, {})
    if where:
        raise PgolfError(f"{name}: renaming local variables changed {where} (a minifier bug)")


def _renaming_differs(a: types.CodeType, b: types.CodeType, outer: dict[str, str]) -> str | None:
    """What differs between `a` and `b` beyond a renaming of locals (None: nothing)."""
    here = f"the code of {a.co_name} (line {a.co_firstlineno})"
    flags = inspect.CO_VARARGS | inspect.CO_VARKEYWORDS
    params = a.co_argcount + a.co_kwonlyargcount + bin(a.co_flags & flags).count("1")
    fixed = ("co_name", "co_qualname", "co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_flags",
             "co_names", "co_firstlineno", "co_exceptiontable")
    if any(getattr(a, f, None) != getattr(b, f, None) for f in fixed) or a.co_varnames[:params] != b.co_varnames[
            :params] or [len(a.co_varnames), len(a.co_cellvars), len(a.co_freevars)] != [
            len(b.co_varnames), len(b.co_cellvars), len(b.co_freevars)]:
        return here
    names: dict[str, str] = {}
    pairs = [*zip(a.co_varnames, b.co_varnames), *((f, outer.get(f)) for f in a.co_freevars)]
    ia, ib = list(dis.get_instructions(a)), list(dis.get_instructions(b))
    if len(ia) != len(ib):
        return here
    for x, y in zip(ia, ib):
        if x.opname != y.opname:
            return f"{here}: {x.opname} {x.argrepr} became {y.opname} {y.argrepr}"
        if x.opname in ("LOAD_CLOSURE", "MAKE_CELL"):
            continue  # in the order of the names (cells) or of the inner code's free variables: checked below
        if x.opcode in _NAME_OPS:
            pairs += zip(*(v if isinstance(v, tuple) else (v,) for v in (x.argval, y.argval)))
        elif x.arg != y.arg or not isinstance(x.argval, types.CodeType) and repr(x.argval) != repr(y.argval):
            return f"{here}: {x.opname} {x.argrepr} became {y.opname} {y.argrepr}"
    for old, new in pairs:
        if names.setdefault(old, new) != new:
            return f"{here}: {old} became both {names[old]} and {new}"
    for cell in a.co_cellvars:  # one only inner code reads (`__class__`) keeps its name: checked there
        names.setdefault(cell, cell)
    if len(set(names.values())) != len(names) or any(sorted(map(str, (names.get(v) for v in va))) != sorted(vb)
                                                     for va, vb in ((a.co_cellvars, b.co_cellvars),
                                                                    (a.co_freevars, b.co_freevars))):
        return f"{here}: two variables share a name"
    if len(a.co_consts) != len(b.co_consts):
        return here
    for x, y in zip(a.co_consts, b.co_consts):
        if isinstance(x, types.CodeType) and isinstance(y, types.CodeType):
            inner = _renaming_differs(x, y, names)
            if inner:
                return inner
        elif type(x) is not type(y) or repr(x) != repr(y):
            return f"{here}: a constant"
    return None


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


# Pythons on which check_renaming proves every pgolf module's renaming (3.11: the test suite; 3.12: the
# GPU image's, checked by running the packer's minifier over the package). Elsewhere a failed proof
# leaves that module's names alone instead of stopping the packer.
RENAMING_PROVEN_ON = {(3, 11), (3, 12)}


def minify(source: str, name: str = "<source>") -> str:
    """`source` minified; raises PgolfError if the result does not mean the same as the stripped source."""
    try:
        tree = strip_documentation(ast.parse(source, filename=name))
    except SyntaxError as e:
        raise PgolfError(f"{name}: cannot minify, not valid Python ({e})") from None
    renamed = rename_locals(copy.deepcopy(tree))
    try:
        check_renaming(tree, renamed, name)
        tree = renamed
    except PgolfError:
        if sys.version_info[:2] in RENAMING_PROVEN_ON:
            raise
        # a newer compiler lays code out in ways the check does not know (3.13 loads closure cells
        # by LOAD_FAST in name order): no proof, so this module keeps its names
    out = _join_bodies(_squeeze(ast.unparse(tree))).rstrip("\n") + "\n"
    if not parses_to(out, tree):
        raise PgolfError(f"{name}: the minified source does not parse to the same program (a minifier bug)")
    return out


def parses_to(text: str, tree: ast.AST) -> bool:
    """Whether `text` is the program `tree` (the packer's passes prove themselves with it)."""
    try:
        return ast.dump(ast.parse(text)) == ast.dump(tree)
    except SyntaxError:
        return False
