"""Writing shards (the format is pgolf.data.shards'): `pgolf data prepare` and `download`, the tests'
fixtures, benchmarks. A run only reads shards, so this is never part of one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from pgolf.data.shards import (HEADER_DTYPE, HEADER_INTS, MAGIC, MAX_TOKENS, SIDECAR_NAME, TOKEN_NAME, VALUE_DTYPE,
                               VERSION, sorted_matches)
from pgolf.fileio import atomic_open


def write_shard(path: str | Path, values: np.ndarray | Sequence[int]) -> None:
    """Write values as a shard, atomically (temp file, then rename)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"shard values must be 1-D, got shape {arr.shape}")
    if arr.size > MAX_TOKENS:
        raise ValueError(f"{arr.size} values exceed the int32 header's limit of {MAX_TOKENS}")
    if arr.dtype != VALUE_DTYPE:
        if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(np.uint16).max):
            raise ValueError(f"{path}: values must fit in uint16, got range [{arr.min()}, {arr.max()}]")
        arr = arr.astype(VALUE_DTYPE)
    header = np.zeros(HEADER_INTS, dtype=HEADER_DTYPE)
    header[:3] = (MAGIC, VERSION, arr.size)
    with atomic_open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(arr.tobytes())


def list_any_shards(directory: str | Path) -> list[Path]:
    """Every token and sidecar shard file in a directory, gaps or not (what an export would replace)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return [*sorted_matches(directory, TOKEN_NAME, None), *sorted_matches(directory, SIDECAR_NAME, None)]
