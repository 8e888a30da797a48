"""Document sources: plain text, JSONL and gzip JSONL, read lazily and in order.

- `*.jsonl` / `*.jsonl.gz`: one JSON object per line, text in a field (default `text`).
- `*.txt` / `*.txt.gz`: the whole file is one document.
- a directory: every such file below it, in sorted path order.

Order matters: the first N documents become validation, as in the challenge's export.
Text is passed through untouched (the exporter does not strip; spec §2.1).
"""
from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Iterable, Iterator

from pgolf.errors import PgolfError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
TEXT_SUFFIXES = (".txt", ".txt.gz")


def _kind(path: Path) -> str | None:
    name = path.name
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(TEXT_SUFFIXES):
        return "txt"
    return None


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Resolve files and directories into the ordered list of document files."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _kind(p))
            if not found:
                raise PgolfError(f"input directory {path} holds no .txt, .jsonl or .jsonl.gz files")
            files.extend(found)
        elif path.is_file():
            if _kind(path) is None:
                raise PgolfError(f"input {path}: unsupported file type (expected .txt, .jsonl or .jsonl.gz, optionally gzipped)")
            files.append(path)
        else:
            raise PgolfError(f"input {path} does not exist")
    if not files:
        raise PgolfError("no input files given")
    return files


def _check_encodable(text: str, path: Path, lineno: int, field: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PgolfError(f"{path}:{lineno}: field {field!r} holds a lone surrogate ({text[e.start]!a} at character "
                         f"{e.start}), which is not valid Unicode text") from None


def _jsonl_documents(path: Path, field: str) -> Iterator[str]:
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise PgolfError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or field not in obj:
                raise PgolfError(f"{path}:{lineno}: no {field!r} field in this record")
            text = obj[field]
            if not isinstance(text, str):
                raise PgolfError(f"{path}:{lineno}: field {field!r} is {type(text).__name__}, expected a string")
            if "\\u" in line:  # only a JSON escape can smuggle in a lone surrogate, which no encoder accepts
                _check_encodable(text, path, lineno, field)
            yield text


def iter_documents(inputs: Iterable[str | Path], text_field: str = "text") -> Iterator[str]:
    """Yield every document's text from the inputs, in order."""
    for path in expand_inputs(inputs):
        try:
            if _kind(path) == "jsonl":
                yield from _jsonl_documents(path, text_field)
            else:
                with _open_text(path) as f:
                    yield f.read()
        except UnicodeDecodeError as e:
            raise PgolfError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
        except (gzip.BadGzipFile, EOFError) as e:
            raise PgolfError(f"{path}: corrupt gzip stream ({e})") from None
