"""Train/val document overlap (frontier-spec F10): is any val document also a training document?

Every val document (the tokens between two BOS, BOS excluded) is hashed; the train shards
are then streamed in the loader's order (index order, as `pgolf.train.loader` reads them),
split at BOS with documents carried across shard boundaries, hashed the same way and
looked up. A clean split has no hit; FineWeb is deduplicated, so any hit is a leak to
investigate (PR #2130 was excluded for 40,000 of them).

The hash is vectorised numpy: each token contributes key(id)·key(offset in its document)
(random odd 64-bit keys, fixed by splitmix64), summed per document mod 2^64 and mixed
with the length. Unequal documents collide with probability about 2^-64 per pair, so
~ n_train·n_val / 2^64 overall (2e-8 for the real 8M × 50k). A lookup is a binary
search in the sorted val hashes.

The step at which a training document is first read follows the loader: each optimizer
step takes `batch_tokens + world·grad_accum` contiguous tokens of the stream (every rank's
span carries one extra token for the shifted targets), so the token at global offset g is
consumed by step ⌊g / tokens_per_step⌋ + 1 (steps counted from 1, as the logs count them).
"""
from __future__ import annotations

import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pgolf.data import shards

_G = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
CHUNK_TOKENS = 1 << 22  # per pass: 4M tokens keep the uint64 temporaries at 32 MB


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place on uint64 (wrapping arithmetic)."""
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def tokens_per_step(batch_tokens: int, world: int = 1, grad_accum: int = 1) -> int:
    """Stream tokens one optimizer step consumes (see the module docstring)."""
    return batch_tokens + world * grad_accum


@dataclass(frozen=True)
class Documents:
    hashes: np.ndarray  # uint64 [D]
    starts: np.ndarray  # int64 [D]: offset of each document's first token (after its BOS) in the array
    lengths: np.ndarray  # int64 [D]


def _position_keys(n: int) -> np.ndarray:
    """Random 64-bit keys for offsets 0..n-1 in a document (a pure function of the offset, cached)."""
    global _POS_KEYS
    if _POS_KEYS.size < n:
        _POS_KEYS = _mix((np.arange(max(n, 2 * _POS_KEYS.size), dtype=np.uint64) + np.uint64(1)) * _G)
    return _POS_KEYS


_TOKEN_KEYS = _mix(np.arange(1 << 16, dtype=np.uint64) * _M1 + _G) | np.uint64(1)  # odd: x -> key*x is a bijection
_POS_KEYS = np.zeros(0, np.uint64)


def hash_documents(tokens: np.ndarray, bos_id: int, complete_tail: bool = True) -> tuple[Documents, int]:
    """Hash the non-empty documents of a token array split at BOS.

    Returns (documents, tail_start). Without `complete_tail` the last document may go on
    in the next array: it is left out and `tail_start` says where it begins (carry
    tokens[tail_start:] over); with it, everything is hashed and tail_start = len(tokens).
    """
    n = tokens.size
    bos_pos = np.flatnonzero(tokens == bos_id)
    all_starts = np.concatenate([[0], bos_pos + 1]).astype(np.int64)
    spans = np.diff(np.concatenate([all_starts, [n]]))  # each document and the BOS that ends it
    lengths = spans.copy()
    lengths[:-1] -= 1
    tail_start = n
    if not complete_tail:
        tail_start = int(all_starts[-1])
        lengths = lengths[:-1]
    keep = lengths > 0
    starts, lengths = all_starts[:lengths.size][keep], lengths[keep]
    if starts.size == 0:
        return Documents(np.zeros(0, np.uint64), starts, lengths), tail_start
    body = int(starts[-1] + lengths[-1])
    rel = np.arange(n, dtype=np.int64) - np.repeat(all_starts, spans)  # offset of each token in its document
    z = _TOKEN_KEYS[tokens[:body]] * _position_keys(int(spans.max()))[rel[:body]]
    z[bos_pos[bos_pos < body]] = 0  # BOS is no part of a document
    sums = np.add.reduceat(z, starts)  # BOS and empty documents between kept ones add 0
    sums += lengths.astype(np.uint64) * _M2
    return Documents(_mix(sums), starts, lengths), tail_start


@dataclass(frozen=True)
class OverlapReport:
    val_docs: int
    val_distinct: int
    train_docs: int
    train_tokens: int
    train_shards: int
    hits: int  # train documents equal to a val document
    val_docs_hit: int  # distinct val documents found in train
    first_shard: str | None  # the first hit, in loader order
    first_offset: int | None  # token index in that shard of the document's first token (after its BOS)
    first_global_offset: int | None  # the same in the concatenated train stream
    first_step: int | None  # the optimizer step that reads it (1-based), when tokens_per_step is known
    tokens_per_step: int | None
    seconds: float

    @property
    def clean(self) -> bool:
        return self.hits == 0

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / max(self.seconds, 1e-9)

    def as_dict(self) -> dict:
        return {**asdict(self), "clean": self.clean, "tokens_per_second": self.tokens_per_second}

    def summary(self) -> str:
        head = (f"{self.train_docs:,} train documents ({self.train_tokens:,} tokens, {self.train_shards} shards) "
                f"against {self.val_docs:,} val documents in {self.seconds:.1f} s "
                f"({self.tokens_per_second / 1e6:.1f}M tokens/s)")
        if self.clean:
            return head + ": no overlap"
        step = f", read at training step {self.first_step}" if self.first_step is not None else ""
        return (head + f": {self.hits:,} train documents equal {self.val_docs_hit:,} val documents; first in "
                f"{self.first_shard} at token {self.first_offset:,} (stream offset {self.first_global_offset:,}{step})")


def _val_hashes(directory: Path, bos_id: int | None) -> tuple[np.ndarray, int, int]:
    val = shards.load_split(directory, "val")
    if bos_id is None:
        bos_id = int(val[0])  # the val stream starts with BOS (the export's format)
    docs, _ = hash_documents(np.asarray(val), bos_id)
    return np.unique(docs.hashes), docs.hashes.size, bos_id


@dataclass
class _Part:
    """One shard's scan: its complete documents' lookups, and the fragments at its two ends."""

    hits: int
    docs: int
    first_hit: int | None  # offset in the shard of the first hit's first token
    found: np.ndarray  # hashes hit
    head: np.ndarray  # tokens before the shard's first BOS (the end of the previous shard's document)
    tail: np.ndarray  # tokens after its last BOS (a document that may go on in the next shard)
    tail_start: int
    has_bos: bool


def _scan_shard(path: Path, limit: int, bos_id: int, val_set: np.ndarray) -> _Part:
    """Hash and look up the documents wholly inside the first `limit` tokens of one shard, in chunks."""
    mm = shards.read_shard(path)[:limit]
    bos = np.flatnonzero(np.asarray(mm[:CHUNK_TOKENS]) == bos_id)
    lo = 0
    while not bos.size and lo + CHUNK_TOKENS < mm.size:  # a shard may open with a long document's rest
        lo += CHUNK_TOKENS
        bos = np.flatnonzero(np.asarray(mm[lo:lo + CHUNK_TOKENS]) == bos_id) + lo
    if not bos.size:
        return _Part(0, 0, None, np.zeros(0, np.uint64), np.asarray(mm).copy(), np.zeros(0, np.uint16), 0, False)
    first_bos = int(bos[0])
    hits = docs = 0
    first, found = None, []
    carry, carry_at = np.zeros(0, np.uint16), first_bos + 1
    for at in range(first_bos + 1, mm.size, CHUNK_TOKENS):
        piece = np.asarray(mm[at:at + CHUNK_TOKENS])
        chunk = np.concatenate([carry, piece]) if carry.size else piece
        chunk_at = at - carry.size
        d, tail = hash_documents(chunk, bos_id, complete_tail=False)
        n, hit_first, f = _lookup(d, val_set)
        hits, docs = hits + n, docs + d.hashes.size
        if n:
            found.append(f)
            first = chunk_at + hit_first if first is None else first
        carry, carry_at = chunk[tail:].copy(), chunk_at + tail
    return _Part(hits, docs, first, np.concatenate(found) if found else np.zeros(0, np.uint64),
                 np.asarray(mm[:first_bos]).copy(), carry, carry_at, True)


def scan_overlap(directory: str | Path, bos_id: int | None = None, tokens_per_step: int | None = None,
                 max_train_tokens: int | None = None, workers: int = 1) -> OverlapReport:
    """Look every train document of a dataset directory up among its val documents.

    `max_train_tokens` scans only the prefix a run consumes (steps × tokens_per_step);
    `bos_id` defaults to the val stream's first token. Shards are hashed by `workers`
    processes; the documents that straddle shards are joined and looked up here.
    """
    directory = Path(directory)
    t0 = time.perf_counter()
    val_set, n_val, bos_id = _val_hashes(directory, bos_id)
    files = shards.require_token_shards(directory, "train")
    sizes = np.array([shards.read_header(p) for p in files], dtype=np.int64)
    file_starts = np.concatenate([[0], np.cumsum(sizes)])
    limit = int(file_starts[-1]) if max_train_tokens is None else min(max_train_tokens, int(file_starts[-1]))
    limits = [int(min(sizes[i], max(0, limit - file_starts[i]))) for i in range(len(files))]
    tasks = [(files[i], limits[i], bos_id, val_set) for i in range(len(files)) if limits[i] > 0]
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            parts = list(pool.map(_scan_shard, *zip(*tasks)))
    else:
        parts = [_scan_shard(*t) for t in tasks]
    hits = docs = 0
    firsts, found = [], []
    carry, carry_global = np.zeros(0, np.uint16), 0

    def join(tokens: np.ndarray, at: int) -> None:  # a document that straddled shards, now complete
        nonlocal hits, docs
        d, _ = hash_documents(tokens, bos_id)
        n, hit_first, f = _lookup(d, val_set)
        hits, docs = hits + n, docs + d.hashes.size
        if n:
            firsts.append(at + hit_first)
            found.append(f)

    for i, part in enumerate(parts):
        start = int(file_starts[i])
        if not part.has_bos:
            carry_global = carry_global if carry.size else start
            carry = np.concatenate([carry, part.head])
            continue
        join(np.concatenate([carry, part.head]), carry_global if carry.size else start)
        hits, docs = hits + part.hits, docs + part.docs
        if part.hits:
            firsts.append(start + part.first_hit)
            found.append(part.found)
        carry, carry_global = part.tail, start + part.tail_start
    if carry.size:
        join(carry, carry_global)
    first = min(firsts) if firsts else None
    shard_idx = None if first is None else int(np.searchsorted(file_starts, first, side="right") - 1)
    return OverlapReport(
        val_docs=n_val, val_distinct=int(val_set.size), train_docs=docs, train_tokens=sum(limits),
        train_shards=len(files), hits=hits,
        val_docs_hit=int(np.unique(np.concatenate(found)).size) if found else 0,
        first_shard=None if first is None else files[shard_idx].name,
        first_offset=None if first is None else int(first - file_starts[shard_idx]),
        first_global_offset=first,
        first_step=None if first is None or not tokens_per_step else first // tokens_per_step + 1,
        tokens_per_step=tokens_per_step, seconds=time.perf_counter() - t0)


def _lookup(docs: Documents, val_set: np.ndarray) -> tuple[int, int, np.ndarray]:
    """(hits, start of the first hit in the array, hashes hit)."""
    if docs.hashes.size == 0 or val_set.size == 0:
        return 0, 0, np.zeros(0, np.uint64)
    idx = np.minimum(np.searchsorted(val_set, docs.hashes), val_set.size - 1)
    hit = val_set[idx] == docs.hashes
    n = int(hit.sum())
    if not n:
        return 0, 0, np.zeros(0, np.uint64)
    return n, int(docs.starts[np.argmax(hit)]), docs.hashes[hit]
