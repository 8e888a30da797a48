"""One build of the hints, shared by every rank: rank 0 builds and writes one file; the other ranks
memory-map it (no rank builds twice, host RAM holds one copy in the page cache).

File: 8-byte magic, 8-byte little-endian header length, a JSON header (stream length, settings,
backend, sha256 of the payload), then the payload: hint int32 [n] and confidence float32 [n].
Written atomically (pgolf.fileio); readers check the header against their own arguments and the
payload against its checksum.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch.distributed as dist

from pgolf.errors import PgolfError
from pgolf.fileio import atomic_open
from pgolf.ngram.settings import NgramSettings
from pgolf.ngram.state import Hints, build_hints

MAGIC = b"PGNGRAM1"


def _payload_sha(hint: np.ndarray, conf: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(memoryview(hint).cast("B"))
    h.update(memoryview(conf).cast("B"))
    return h.hexdigest()


def write_hints(path: str | os.PathLike, hints: Hints) -> None:
    header = json.dumps({"n": len(hints.token), "settings": asdict(hints.settings), "backend": hints.backend,
                         "sha256": _payload_sha(hints.token, hints.confidence)}).encode()
    with atomic_open(path, "wb") as f:
        f.write(MAGIC + len(header).to_bytes(8, "little") + header)
        f.write(memoryview(np.ascontiguousarray(hints.token)).cast("B"))
        f.write(memoryview(np.ascontiguousarray(hints.confidence)).cast("B"))


def read_hints(path: str | os.PathLike, n: int, settings: NgramSettings) -> Hints:
    """Memory-map a hints file; PgolfError if it is not one, is for another stream or settings, or is corrupt."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
        if len(head) != 16 or head[:8] != MAGIC:
            raise PgolfError(f"{path}: not an n-gram hints file")
        try:
            header = json.loads(f.read(int.from_bytes(head[8:], "little")))
        except (ValueError, UnicodeDecodeError) as e:
            raise PgolfError(f"{path}: unreadable header ({e})") from None
    offset = 16 + int.from_bytes(head[8:], "little")
    if header.get("n") != n or header.get("settings") != asdict(settings):
        raise PgolfError(f"{path}: hints for n={header.get('n')} {header.get('settings')}, "
                         f"expected n={n} {asdict(settings)}")
    if path.stat().st_size != offset + 8 * n:
        raise PgolfError(f"{path}: {path.stat().st_size} bytes, expected {offset + 8 * n} (truncated?)")
    hint = np.memmap(path, dtype=np.int32, mode="r", offset=offset, shape=(n,))
    conf = np.memmap(path, dtype=np.float32, mode="r", offset=offset + 4 * n, shape=(n,))
    if _payload_sha(hint, conf) != header.get("sha256"):
        raise PgolfError(f"{path}: checksum mismatch (corrupt hints file)")
    return Hints(hint, conf, settings, header.get("backend", "?"), source="loaded")


def shared_hints(tokens: np.ndarray, vocab_size: int, path: str | os.PathLike, *, doc_starts=None, order=None,
                 settings: NgramSettings = NgramSettings(), backend: str = "auto") -> Hints:
    """`build_hints` once for all ranks of the default process group (just a build without one).

    Rank 0 builds and writes `path` (on a filesystem every rank sees); its outcome is broadcast, so
    a failure there is a PgolfError on every rank rather than a hang.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return build_hints(tokens, vocab_size, doc_starts=doc_starts, order=order, settings=settings, backend=backend)
    outcome: list = [None]
    hints, failure = None, None
    if dist.get_rank() == 0:
        try:
            hints = build_hints(tokens, vocab_size, doc_starts=doc_starts, order=order, settings=settings,
                                backend=backend)
            write_hints(path, hints)
        except Exception as e:  # noqa: BLE001 - told to every rank, then raised as it was
            failure, outcome[0] = e, f"{type(e).__name__}: {e}"
    dist.broadcast_object_list(outcome, src=0)
    if failure is not None:
        raise failure
    if outcome[0] is not None:
        raise PgolfError(f"n-gram hints failed on rank 0: {outcome[0]}")
    return hints if hints is not None else read_hints(path, len(tokens), settings)
