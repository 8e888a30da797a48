"""Atomic file writes and checksums.

Every artifact pgolf writes (shards, manifests, tokenizers, checkpoints) goes through
`atomic_open`: bytes land in a temporary file next to the target and are renamed over
it only after a successful flush, so an interrupted run never leaves a half-written file
under a real name.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import IO, Iterator

from pgolf.errors import PgolfError


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; rename it onto `path` on success."""
    if "w" not in mode:
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_output_dir(path: str | os.PathLike, what: str, named: str | os.PathLike | None = None) -> None:
    """Refuse early, naming `what` (the flag or field) and `named` (default `path`), a
    directory that cannot be written: `path` is a file, or it (or the nearest ancestor that
    exists, where it would be made) is not a writable directory. Checked before anything
    is created, so a refused command leaves nothing behind."""
    path = Path(path)
    named = path if named is None else named
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise PgolfError(f"{what} {named}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PgolfError(f"{what} {named}: {existing} is not writable")


def check_output_file(path: str | os.PathLike, what: str) -> None:
    """As check_output_dir, for a file to be written at `path`."""
    path = Path(path)
    if path.is_dir():
        raise PgolfError(f"{what} {path} is an existing directory; give a file path")
    check_output_dir(path.parent, what, path)
