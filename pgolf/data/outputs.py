"""Output directories of the data commands: checked before any work (pgolf.fileio), created only
when needed, and removed again when the command fails.

A bad output path (a file where a directory belongs, a directory where a file belongs, a
read-only parent) is a clear error naming the flag and the path, raised before anything is
encoded or trained, never an OSError traceback after minutes of work.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from pgolf.errors import PgolfError
from pgolf.fileio import check_output_dir


@contextlib.contextmanager
def created_dir(path: Path, flag: str) -> Iterator[Path]:
    """Create `path` (with parents) for the body; if the body fails, remove every directory this
    created that is still empty, so a failed command leaves nothing behind."""
    check_output_dir(path, flag)
    created = []
    p = path
    while not os.path.lexists(p):
        created.append(p)
        p = p.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PgolfError(f"{flag} {path}: cannot create it ({e.strerror})") from None
    try:
        yield path
    except BaseException:
        for d in created:  # deepest first
            with contextlib.suppress(OSError):
                d.rmdir()  # only if empty: never removes anything the body kept
        raise
