"""Document-packing training loader (spec §2.4, the records' `DocumentPackingLoader`).

Each step, every rank takes one flat row of `local_tokens` inputs (98,304 in the records:
786,432 / 8) plus their targets, and the varlen attention boundaries of that row:

- shards are read in index order, wrapping forever; in a freshly opened shard the cursor
  starts at its first BOS
- rank r's span is `[cursor + r·(L+1), +L+1)`: inputs are its first L tokens, targets its
  last L; the cursor then advances by world·(L+1), so the ranks' spans are disjoint and
  together cover the step's slice of the shard
- a step that would run past the shard's end moves to the next shard (the rest is skipped)
- `cu_seqlens` starts a segment at every BOS inside the inputs (and at 0, where the row
  begins mid-document); a document longer than `seq_len` is cut into `seq_len` pieces
  from its start; the tensor is padded with the row length to a bucketed length
  (`cu_min_entries` when the row's boundaries fit in it, else the next multiple of
  `cu_bucket` entries, 64 in the records), so torch.compile sees one or a few static
  shapes; `max_seqlen` is the constant `seq_len`

The loader's state is the position of the next step (shard index and cursor), the same
on every rank; `state_dict` / `load_state_dict` resume it exactly, also with the
optional prefetch thread (batches built ahead are not counted as consumed). A change of
`seq_len` re-splits the same spans: the data order never depends on it. (The records
drop the two spans they had prefetched at each change; this loader does not.)
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pgolf.data import shards
from pgolf.data.shards import ShardError
from pgolf.errors import PgolfError

STATE_VERSION = 1


def segment_starts(doc_starts: np.ndarray, total: int, seq_len: int) -> np.ndarray:
    """Start offsets of the attention segments of a row of `total` tokens.

    `doc_starts` are the sorted offsets of the documents beginning inside the row (its BOS
    positions); offset 0 always starts a segment. Each document [s, e) is cut at
    s, s + seq_len, s + 2·seq_len, ... (seq_len <= 0: never cut).
    """
    starts = np.asarray(doc_starts, dtype=np.int64)
    if starts.size == 0 or starts[0] != 0:
        starts = np.concatenate([np.zeros(1, np.int64), starts])
    if seq_len <= 0:
        return starts
    lengths = np.diff(np.append(starts, total))
    pieces = -(-lengths // seq_len)  # ceil
    first = np.repeat(np.cumsum(pieces) - pieces, pieces)
    return np.repeat(starts, pieces) + (np.arange(int(pieces.sum())) - first) * seq_len


def padded_entries(boundaries: int, bucket: int, min_entries: int = 0) -> int:
    """The static cu_seqlens length that holds `boundaries` entries: `min_entries` when they
    fit in it, else the next multiple of `bucket`."""
    if boundaries <= min_entries:
        return min_entries
    return -(-boundaries // max(bucket, 1)) * max(bucket, 1)


def build_cu_seqlens(doc_starts: np.ndarray, total: int, seq_len: int, bucket: int = 64,
                     min_entries: int = 0) -> tuple[np.ndarray, int]:
    """(cu_seqlens int32 padded with `total`, number of real segments)."""
    seg = segment_starts(doc_starts, total, seq_len)
    n = padded_entries(seg.size + 1, bucket, min_entries)
    cu = np.full(n, total, dtype=np.int32)
    cu[:seg.size] = seg
    return cu, int(seg.size)


@dataclass(frozen=True)
class PackedBatch:
    """One rank's step: inputs / targets [1, L] int64, cu_seqlens [n] int32 (padded)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int
    num_segments: int

    def to(self, device: torch.device | str, non_blocking: bool = True) -> "PackedBatch":
        inputs, targets, cu = (t.to(device, non_blocking=non_blocking)
                               for t in (self.inputs, self.targets, self.cu_seqlens))
        return PackedBatch(inputs, targets, cu, self.max_seqlen, self.num_segments)


@dataclass(frozen=True)
class _Shard:
    tokens: np.ndarray  # read-only memmap
    first_bos: int


def _first_bos(tokens: np.ndarray, bos_id: int, chunk: int = 1 << 20) -> int:
    """Offset of the first BOS, scanning only as far as needed (a full scan of a 10^8-token
    shard costs most of a second on a CPU; the first BOS is usually within a document)."""
    for lo in range(0, tokens.size, chunk):
        hits = np.flatnonzero(tokens[lo:lo + chunk] == bos_id)
        if hits.size:
            return lo + int(hits[0])
    return -1


class DocumentPackingLoader:
    """Packed varlen batches for rank `rank` of `world`; see the module docstring."""

    packed_rows = True  # batches are flat rows with cu_seqlens (what the trainer's feed asks)

    def __init__(self, files: Sequence[str | Path], *, rank: int, world: int, local_tokens: int, seq_len: int,
                 vocab_size: int, bos_id: int = 1, cu_bucket: int = 64, cu_min_entries: int = 0,
                 prefetch: int = 0, pin_memory: bool = False):
        if not files:
            raise PgolfError("no training shards for the packing loader")
        if not 0 <= rank < world:
            raise PgolfError(f"rank {rank} is outside world size {world}")
        if local_tokens <= 0 or seq_len <= 0 or cu_bucket <= 0:
            raise PgolfError(f"local_tokens ({local_tokens}), seq_len ({seq_len}) and cu_bucket ({cu_bucket}) "
                             "must be positive")
        self.files = [Path(f) for f in files]
        self.n_tokens = [shards.read_header(f) for f in self.files]  # every header, now
        self.rank, self.world, self.local_tokens = rank, world, local_tokens
        self.span = local_tokens + 1
        self.global_span = world * self.span
        if max(self.n_tokens) < self.global_span:
            raise PgolfError(f"no train shard holds one step of {world} x ({local_tokens} + 1) = {self.global_span} "
                             f"tokens (largest: {max(self.n_tokens)} in {self.files[int(np.argmax(self.n_tokens))]})")
        self.vocab_size, self.bos_id = vocab_size, bos_id
        self.cu_bucket, self.cu_min_entries = cu_bucket, cu_min_entries
        self.seq_len = seq_len
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self._cache: dict[int, _Shard] = {}
        self._consumed = (0, -1)  # (shard index, cursor); -1: the shard's first BOS
        self._ahead = self._consumed  # position after the last batch built (prefetch)
        self._depth = max(int(prefetch), 0)  # batches built ahead on a background thread (the records: 2)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pgolf-pack") if self._depth else None
        self._queue: deque[Future] = deque()

    @classmethod
    def from_dir(cls, data_dir: str | Path, **kw) -> "DocumentPackingLoader":
        files = shards.require_token_shards(data_dir, "train")
        return cls(files, **kw)

    # --- shards and positions (only ever run by one thread at a time) ---

    def _shard(self, idx: int) -> _Shard:
        shard = self._cache.get(idx)
        if shard is None:
            path = self.files[idx]
            tokens = shards.read_shard(path)
            if tokens.size != self.n_tokens[idx]:
                raise ShardError(path, f"now holds {tokens.size} tokens, {self.n_tokens[idx]} when the loader started")
            first = _first_bos(tokens, self.bos_id)
            if first < 0:
                raise ShardError(path, f"holds no BOS (id {self.bos_id}); document packing needs one per document")
            shard = _Shard(tokens, first)
            self._cache = {idx: shard}  # positions only move forward: one open shard is enough
        return shard

    def _locate(self, pos: tuple[int, int]) -> tuple[int, int, _Shard]:
        """The (shard, cursor) this step really starts at: skip shards too short for it."""
        idx, cursor = pos
        for _ in range(len(self.files) + 1):
            if max(cursor, 0) + self.global_span <= self.n_tokens[idx]:  # else it cannot fit: skip unopened
                shard = self._shard(idx)
                cursor = shard.first_bos if cursor < 0 else cursor
                if cursor + self.global_span <= shard.tokens.size:
                    return idx, cursor, shard
            idx, cursor = (idx + 1) % len(self.files), -1
        raise PgolfError(f"no train shard holds a full step of {self.global_span} tokens after its first BOS")

    def _build(self, pos: tuple[int, int], seq_len: int) -> tuple[PackedBatch, tuple[int, int]]:
        idx, cursor, shard = self._locate(pos)
        start = cursor + self.rank * self.span
        row = np.asarray(shard.tokens[start:start + self.span])
        top = int(row.max())
        if top >= self.vocab_size:
            raise ShardError(self.files[idx], f"token id {top} out of range for vocab_size {self.vocab_size} "
                                              f"(in tokens {start}..{start + self.span})")
        doc_starts = np.flatnonzero(row[:-1] == self.bos_id)  # BOS among the inputs only
        cu, n_seg = build_cu_seqlens(doc_starts, self.local_tokens, seq_len, self.cu_bucket, self.cu_min_entries)
        row = torch.from_numpy(row.astype(np.int64))
        cu = torch.from_numpy(cu)
        if self.pin_memory:
            row, cu = row.pin_memory(), cu.pin_memory()
        batch = PackedBatch(row[None, :-1], row[None, 1:], cu, seq_len, n_seg)
        return batch, (idx, cursor + self.global_span)

    def _produce(self, seq_len: int) -> tuple[PackedBatch, tuple[int, int]]:
        batch, self._ahead = self._build(self._ahead, seq_len)
        return batch, self._ahead

    # --- the trainer's API ---

    def next_batch(self, seq_len: int | None = None) -> PackedBatch:
        """The next step's batch for this rank (on the CPU; `.to(device)` moves it)."""
        if seq_len is not None and int(seq_len) != self.seq_len:
            self._drain()
            self.seq_len = int(seq_len)
        if self._pool is None:
            batch, self._consumed = self._build(self._consumed, self.seq_len)
            return batch
        while len(self._queue) < self._depth:
            self._queue.append(self._pool.submit(self._produce, self.seq_len))
        batch, self._consumed = self._queue.popleft().result()
        self._queue.append(self._pool.submit(self._produce, self.seq_len))
        return batch

    def _drain(self) -> None:
        """Forget batches built ahead: the next one starts at the consumed position."""
        while self._queue:
            fut = self._queue.popleft()
            try:
                fut.result()
            except Exception:  # the position is reset anyway; a real fault recurs on the next build
                pass
        self._ahead = self._consumed

    def cu_lengths(self, seq_len: int, up_to: int) -> list[int]:
        """Every padded cu_seqlens length a batch at `seq_len` can have, up to `up_to` entries.

        The fewest boundaries a row can have is ceil(L / seq_len) + 1 (one long document);
        the trainer compiles each of these lengths during warm-up.
        """
        fewest = padded_entries(-(-self.local_tokens // seq_len) + 1, self.cu_bucket, self.cu_min_entries)
        found = {padded_entries(n, self.cu_bucket, self.cu_min_entries) for n in range(fewest, up_to + 1)}
        return sorted(n for n in found | {fewest} if n <= max(up_to, fewest))

    def synthetic_cu_seqlens(self, seq_len: int, entries: int) -> torch.Tensor:
        """A valid cu_seqlens of exactly `entries` entries (the row cut every seq_len), for warm-up."""
        cu, _ = build_cu_seqlens(np.zeros(1, np.int64), self.local_tokens, seq_len, 1, entries)
        if cu.size != entries:
            raise PgolfError(f"{entries} cu_seqlens entries cannot hold a {self.local_tokens}-token row "
                             f"cut at {seq_len}")
        return torch.from_numpy(cu)

    def state_dict(self) -> dict:
        shard, cursor = self._consumed
        return {"version": STATE_VERSION, "kind": "document_packing", "shard": shard, "cursor": cursor,
                "world": self.world, "local_tokens": self.local_tokens,
                "files": [p.name for p in self.files], "n_tokens": list(self.n_tokens)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "document_packing" or state.get("version") != STATE_VERSION:
            raise PgolfError(f"loader state is not a version-{STATE_VERSION} document_packing state "
                             f"(kind={state.get('kind')!r}, version={state.get('version')!r})")
        for key, mine in (("world", self.world), ("local_tokens", self.local_tokens),
                          ("files", [p.name for p in self.files]), ("n_tokens", list(self.n_tokens))):
            if state[key] != mine:
                raise PgolfError(f"loader state field {key!r} does not match this run; the data order "
                                 "would change, so the run cannot resume exactly")
        self._drain()
        self._consumed = self._ahead = (int(state["shard"]), int(state["cursor"]))

    def close(self) -> None:
        if self._pool is not None:
            self._drain()
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "DocumentPackingLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
