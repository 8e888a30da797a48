"""How many bytes the code counts for, explicitly (spec §1.2), measured on the files, never estimated.

"raw": the UTF-8 size of every source file a run of the configuration needs (its import
closure, `pgolf.export.trace`, its native sources and its recipe). "wrapped": the size of the
packed `train_gpt.py` that `pgolf submit` ships for that configuration (`pgolf.export.pack`:
the same function, so the two cannot differ). A run of a packed script counts the script's own
file, as the records do (`Path(__file__)`); the script sets `PACKED_SCRIPT` before it runs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pgolf.config import Config

CODE_MODES = ("raw", "wrapped")
PACKED_SCRIPT: str | None = None  # the running packed train_gpt.py, if this process is one


@dataclass(frozen=True)
class CodeBytes:
    mode: str  # "raw", "wrapped", or "packed" (a packed script's own file)
    files: tuple[str, ...]
    raw_bytes: int
    counted_bytes: int


def count_code_bytes(mode: str, cfg: Config) -> CodeBytes:
    if PACKED_SCRIPT is not None:
        size = os.path.getsize(PACKED_SCRIPT)
        return CodeBytes("packed", (Path(PACKED_SCRIPT).name,), size, size)
    # the packer and tracer are not part of a packed script (pgolf.export.trace.OPTIONAL)
    from pgolf.export.pack import code_files, pack

    if mode == "raw":
        _, files, raw = code_files(cfg)
        return CodeBytes(mode, tuple(sorted(files)), raw, raw)
    packed = pack(cfg)
    return CodeBytes(mode, packed.files, packed.source_bytes, packed.code_bytes)
