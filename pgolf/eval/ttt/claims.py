"""Dynamic batch claiming: ranks take the next queue index from one shared atomic counter.

The counter lives in the process group's key-value store (`store.add` is atomic across ranks),
so no file lock in /tmp is needed and it works across hosts. Without a process group a local
counter does. Each engine run uses a fresh key: runs happen in the same order on every rank,
so a per-process run number names the same key everywhere.
"""
from __future__ import annotations

import itertools

import torch.distributed as dist

_RUNS = itertools.count()


class BatchClaimer:
    def __init__(self, distributed: bool):
        self._key = f"pgolf/ttt/claims/{next(_RUNS)}"
        self._store = dist.distributed_c10d._get_default_store() if distributed else None
        self._local = itertools.count()

    def next(self) -> int:
        """The next unclaimed queue index (may be past the end: then the queue is empty)."""
        if self._store is None:
            return next(self._local)
        return int(self._store.add(self._key, 1)) - 1
