"""The challenge's token shard format (spec §2.2) and its byte sidecar (§2.6).

A shard is a 1024-byte header of 256 little-endian int32 (magic 20240520, version 1,
token count n, zeros) followed by n little-endian uint16 values. Token shards hold token
ids; sidecar shards (`fineweb_val_bytes_*.bin`, CaseOps) hold, per val token, the
original UTF-8 bytes credited to it. Both share this module's reader; the writer, which only
the data tools run, is pgolf.data.shard_writer.

Reads are memory-mapped and validated: magic, version, exact file size, and (when the
vocabulary size is known) that every id is below it. A bad file raises `ShardError`
naming the file and the fault; nothing downstream ever sees its contents.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pgolf.errors import PgolfError

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
HEADER_DTYPE = np.dtype("<i4")
VALUE_DTYPE = np.dtype("<u2")
MAX_TOKENS = 2**31 - 1  # the header stores the count as int32

# Exact names only: a loose `fineweb_val_*.bin` glob also matches the `_bytes_` sidecars
# and double-loads the val tokens (the PR #1738 bug, spec §3.4.3).
TOKEN_NAME = re.compile(r"fineweb_(train|val)_(\d{6})\.bin")
SIDECAR_NAME = re.compile(r"fineweb_val_bytes_(\d{6})\.bin")
SPLITS = ("train", "val")


class ShardError(PgolfError, ValueError):
    """A shard file that must not be used: the message names the file and the fault."""

    def __init__(self, path: str | Path, fault: str):
        super().__init__(f"{path}: {fault}")
        self.path = Path(path)
        self.fault = fault


def shard_name(split: str, index: int) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return f"fineweb_{split}_{index:06d}.bin"


def sidecar_name(index: int) -> str:
    return f"fineweb_val_bytes_{index:06d}.bin"


def sorted_matches(directory: Path, pattern: re.Pattern, split: str | None) -> list[Path]:
    found = []
    for p in Path(directory).iterdir():
        m = pattern.fullmatch(p.name)
        if m and (split is None or m.group(1) == split):
            found.append((int(m.groups()[-1]), p))
    return [p for _, p in sorted(found)]


def _check_consecutive(paths: list[Path], namer) -> list[Path]:
    """Shards numbered 0, 1, 2, ...: a gap means a file is missing and the stream would silently skip it."""
    for i, p in enumerate(paths):
        if p.name != namer(i):
            raise ShardError(p.parent / namer(i), f"missing: the directory holds {p.name} but not this one "
                                                   "(shards must be numbered from 000000 without gaps)")
    return paths


def list_token_shards(directory: str | Path, split: str) -> list[Path]:
    """Token shards of one split in index order, numbered without gaps; never the `_bytes_` sidecars."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    directory = Path(directory)
    if not directory.is_dir():
        raise PgolfError(f"data directory {directory} does not exist")
    return _check_consecutive(sorted_matches(directory, TOKEN_NAME, split), lambda i: shard_name(split, i))


def list_sidecar_shards(directory: str | Path) -> list[Path]:
    """Val byte-sidecar shards in index order, numbered without gaps (empty when the dataset has none)."""
    return _check_consecutive(sorted_matches(Path(directory), SIDECAR_NAME, None), sidecar_name)


def read_header(path: str | Path) -> int:
    """Validate a shard's header and size; return its token count."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ShardError(path, "file does not exist") from None
    if size < HEADER_BYTES:
        raise ShardError(path, f"corrupt: {size} bytes is shorter than the {HEADER_BYTES}-byte header")
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(HEADER_BYTES), dtype=HEADER_DTYPE)
    if header[0] != MAGIC:
        raise ShardError(path, f"wrong magic {int(header[0])} (expected {MAGIC}); not a token shard")
    if header[1] != VERSION:
        raise ShardError(path, f"unsupported version {int(header[1])} (expected {VERSION})")
    n = int(header[2])
    if n < 0:
        raise ShardError(path, f"corrupt: negative token count {n} in header")
    expected = HEADER_BYTES + n * VALUE_DTYPE.itemsize
    if size < expected:
        raise ShardError(path, f"truncated: header promises {n} tokens ({expected} bytes) but the file has {size} bytes")
    if size > expected:
        raise ShardError(path, f"corrupt: {size - expected} bytes beyond the {n} tokens its header declares")
    return n


def read_shard(path: str | Path, vocab_size: int | None = None) -> np.ndarray:
    """Memory-map a validated shard's values (read-only uint16).

    With `vocab_size`, every id must be below it; ids at or above it would index past
    the embedding table and the byte tables, so they are an error, never clipped.
    """
    n = read_header(path)
    values = np.memmap(path, dtype=VALUE_DTYPE, mode="r", offset=HEADER_BYTES, shape=(n,))
    if vocab_size is not None and n:
        top = int(values.max())
        if top >= vocab_size:
            at = int(np.argmax(values >= vocab_size))
            raise ShardError(path, f"token id {top} out of range for vocab_size {vocab_size} (first bad id at index {at})")
    return values


def require_token_shards(directory: str | Path, split: str) -> list[Path]:
    """`list_token_shards`, refusing a split that has none."""
    paths = list_token_shards(directory, split)
    if not paths:
        raise PgolfError(f"no fineweb_{split}_NNNNNN.bin shards in {directory}")
    return paths


def load_split(directory: str | Path, split: str, vocab_size: int | None = None) -> np.ndarray:
    """All token shards of a split, validated and concatenated (used for val)."""
    return np.concatenate([read_shard(p, vocab_size) for p in require_token_shards(directory, split)])


def load_sidecar(directory: str | Path, tokens: np.ndarray, bos_id: int) -> np.ndarray:
    """The val byte sidecar, checked against the val tokens it annotates.

    Sidecar shards must pair 1:1 with the val token shards (same count per shard) and
    credit 0 bytes to every BOS; anything else means the two were not written together.
    """
    directory = Path(directory)
    sidecars = list_sidecar_shards(directory)
    token_shards = list_token_shards(directory, "val")
    if len(sidecars) != len(token_shards):
        raise PgolfError(
            f"{directory}: {len(sidecars)} fineweb_val_bytes shards for {len(token_shards)} fineweb_val shards; "
            "the byte sidecar must pair 1:1 with the val token shards"
        )
    parts = []
    for side, tok in zip(sidecars, token_shards):
        n_side, n_tok = read_header(side), read_header(tok)
        if n_side != n_tok:
            raise ShardError(side, f"holds {n_side} entries but its token shard {tok.name} holds {n_tok} tokens")
        parts.append(read_shard(side))
    sidecar = np.concatenate(parts)
    if sidecar.shape != tokens.shape:
        raise PgolfError(f"{directory}: sidecar has {sidecar.size} entries for {tokens.size} val tokens")
    if sidecar.size > 1 and not sidecar.any():
        raise ShardError(sidecars[0], "the byte sidecar credits 0 bytes to every val token (all zeros); "
                                      "val_bpb would be undefined")
    bad = np.flatnonzero((tokens == bos_id) & (sidecar != 0))
    if bad.size:
        raise PgolfError(
            f"{directory}: byte sidecar credits {int(sidecar[bad[0]])} bytes to the BOS at val position {int(bad[0])}; "
            "BOS must get 0 bytes (the sidecar does not match these tokens)"
        )
    return sidecar


def doc_starts_at_bos(tokens: np.ndarray, bos_id: int) -> np.ndarray:
    """Document start positions: every BOS, and position 0 if the stream does not open with one."""
    starts = np.flatnonzero(np.asarray(tokens) == bos_id).astype(np.int64)
    if len(tokens) and (len(starts) == 0 or starts[0] != 0):
        starts = np.concatenate([[0], starts]).astype(np.int64)
    return starts
