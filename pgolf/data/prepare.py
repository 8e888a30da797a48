"""`pgolf data prepare`: documents -> BOS-prefixed token shards, as the challenge exports them.

Each document becomes [BOS] + encode(transform(text)) with no EOS (spec §2.1). The first
`val_docs` documents form the val split, the rest train; each split is one continuous
stream cut into shards of `shard_tokens`. For tokenizers that transform text (CaseOps)
the val split also gets the original-byte sidecar, aligned shard for shard.

Encoding runs in a process pool over chunks of documents, in order. Every file is written
atomically into a staging directory, and moved into place only once the whole export
succeeded; the manifest (tokenizer, counts, byte totals, sha256 of inputs and outputs)
is written last.
"""
from __future__ import annotations

import collections
import contextlib
import datetime
import functools
import itertools
import multiprocessing as mp
import os
import re
import shutil
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

import pgolf
from pgolf.data import shard_writer, shards
from pgolf.data.encode import encode_task, init_worker
from pgolf.data.overlap import scan_overlap
from pgolf.data.documents import expand_inputs, iter_documents
from pgolf.data.manifest import MANIFEST_FORMAT, MANIFEST_NAME
from pgolf.data.outputs import created_dir
from pgolf.data.tokenizer import IDENTITY, load_tokenizer
from pgolf.signals import sigterm_raises
from pgolf.errors import PgolfError
from pgolf.fileio import atomic_write_json, sha256_file
from pgolf.metric.bytes import position_bytes_for

__all__ = ["MANIFEST_FORMAT", "MANIFEST_NAME", "PrepareOptions", "prepare"]
_STAGING = re.compile(r"\.staging-(\d+)")


@dataclass
class PrepareOptions:
    inputs: list[Path]
    tokenizer: Path
    out_dir: Path
    val_docs: int = 50_000
    shard_tokens: int = 10**8
    byte_sidecar: bool = False  # force a sidecar for untransformed tokenizers too
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_docs: int | None = None
    text_field: str = "text"
    chunk_docs: int = 64
    overwrite: bool = False
    progress: bool = True


# ---------------------------------------------------------------------------------------
# Writing


class _ShardSink:
    """Cuts one continuous stream into fixed-size shards in a directory."""

    def __init__(self, directory: Path, namer, shard_tokens: int):
        self.directory, self.namer, self.shard_tokens = directory, namer, shard_tokens
        self.buffer = np.empty(shard_tokens, dtype=np.uint16)
        self.fill = 0
        self.written: list[Path] = []
        self.total = 0

    def append(self, values: np.ndarray) -> None:
        self.total += values.size
        pos = 0
        while pos < values.size:
            take = min(self.shard_tokens - self.fill, values.size - pos)
            self.buffer[self.fill:self.fill + take] = values[pos:pos + take]
            self.fill += take
            pos += take
            if self.fill == self.shard_tokens:
                self._flush()

    def _flush(self) -> None:
        if self.fill:
            path = self.directory / self.namer(len(self.written))
            shard_writer.write_shard(path, self.buffer[:self.fill])
            self.written.append(path)
            self.fill = 0

    def close(self) -> list[Path]:
        self._flush()
        return self.written


def _chunks(docs: Iterator[str], val_docs: int, chunk_docs: int, sidecar: bool) -> Iterator[tuple[list[str], bool]]:
    """Chunks of documents; no chunk straddles the val/train boundary."""
    index = 0
    while True:
        size = min(chunk_docs, val_docs - index) if index < val_docs else chunk_docs
        chunk = list(itertools.islice(docs, size))
        if not chunk:
            return
        is_val = index < val_docs
        index += len(chunk)
        yield chunk, sidecar and is_val


def _ordered_pool_map(fn, tasks: Iterator, workers: int, initializer, initargs) -> Iterator:
    """`map` over a process pool, in order, with a bounded number of tasks in flight
    (Executor.map would read every document into memory before the first result)."""
    ctx = mp.get_context("spawn")  # no fork: the parent may hold torch/OpenMP threads
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer, initargs=initargs) as pool:
        pending: collections.deque = collections.deque()
        try:
            for task in tasks:
                pending.append(pool.submit(fn, task))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool as e:
            raise PgolfError(f"an encoder worker process died ({e}); re-run with --workers 1 to see why") from None
        finally:
            for f in pending:
                f.cancel()


def _file_entry(path: Path) -> dict:
    return {"name": path.name, "tokens": shards.read_header(path), "sha256": sha256_file(path)}


def _existing_outputs(out_dir: Path) -> list[Path]:
    return shard_writer.list_any_shards(out_dir)


def _check_options(opts: PrepareOptions) -> None:
    if opts.val_docs < 1:
        raise PgolfError(f"--val-docs must be at least 1, got {opts.val_docs}")
    if opts.shard_tokens < 1 or opts.shard_tokens > shards.MAX_TOKENS:
        raise PgolfError(f"--shard-tokens must be in [1, {shards.MAX_TOKENS}], got {opts.shard_tokens}")
    if opts.workers < 1:
        raise PgolfError(f"--workers must be at least 1, got {opts.workers}")
    if opts.max_docs is not None and opts.max_docs < 1:
        raise PgolfError(f"--max-docs must be at least 1, got {opts.max_docs}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale_staging(out_dir: Path) -> None:
    """Remove the staging directories of prepares that were killed (SIGKILL cannot clean up after itself)."""
    if not out_dir.is_dir():
        return
    for p in out_dir.iterdir():
        m = _STAGING.fullmatch(p.name)
        if m and p.is_dir() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)


class Interrupted(PgolfError):
    """A prepare stopped by SIGTERM: cleaned up like any other failure."""


@contextlib.contextmanager
def _sigterm_raises(out_dir: Path):
    """SIGTERM becomes an exception, so the staging directory and the encoder pool are cleaned up
    as for any failure (the default action would kill the process and leave both behind).
    Yields a dict whose "done" the caller sets once the export is in place, for the message."""
    state = {"done": False}

    def interrupted(signum: int) -> Interrupted:
        what = f"the export into {out_dir} had completed" if state["done"] else f"nothing was written to {out_dir}"
        return Interrupted(f"interrupted by {signal.Signals(signum).name}; {what}")

    with sigterm_raises(interrupted):
        yield state


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGTERM/SIGINT while the finished export is moved into place, so it is never half moved."""
    held = {signal.SIGTERM, signal.SIGINT}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def prepare(opts: PrepareOptions) -> dict:
    """Run the export; return the manifest that was written.

    A failure (bad input, SIGTERM, Ctrl-C) leaves --out as it was: the staging directory is
    removed and so is --out itself if this call created it.
    """
    _check_options(opts)
    tok = load_tokenizer(opts.tokenizer)
    input_files = expand_inputs(opts.inputs)
    out_dir = Path(opts.out_dir)
    _sweep_stale_staging(out_dir)
    stale = _existing_outputs(out_dir)
    if stale and not opts.overwrite:
        raise PgolfError(f"{out_dir} already holds shards ({stale[0].name}, ...); pass --overwrite to replace them")
    with _sigterm_raises(out_dir) as state, created_dir(out_dir, "--out"):
        staging = out_dir / f".staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            manifest, outputs = _export(opts, tok, input_files, staging)
            with _signals_deferred():
                for path in stale:
                    path.unlink()
                for path in outputs:
                    os.replace(path, out_dir / path.name)
                atomic_write_json(out_dir / MANIFEST_NAME, manifest)
                state["done"] = True  # a signal held until here must not claim that nothing was written
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _encode_all(opts: PrepareOptions, tok, input_files, staging: Path, with_sidecar: bool):
    """Encode every document into the staging directory's shard sinks; return (sinks, sidecar sink, counts, seconds)."""
    sinks = {
        "val": _ShardSink(staging, lambda i: shards.shard_name("val", i), opts.shard_tokens),
        "train": _ShardSink(staging, lambda i: shards.shard_name("train", i), opts.shard_tokens),
    }
    side_sink = _ShardSink(staging, shards.sidecar_name, opts.shard_tokens)
    counts = {s: {"docs": 0, "text_bytes": 0} for s in sinks}
    docs = iter_documents(input_files, opts.text_field)
    if opts.max_docs is not None:
        docs = itertools.islice(docs, opts.max_docs)
    tasks = _chunks(iter(docs), opts.val_docs, opts.chunk_docs, with_sidecar)
    started = time.perf_counter()
    bar = tqdm(desc="prepare", unit="doc", disable=not opts.progress, dynamic_ncols=True)
    if opts.workers > 1:
        results = _ordered_pool_map(encode_task, tasks, opts.workers, init_worker, (str(tok.path), os.getpid()))
    else:
        results = map(functools.partial(encode_task, tok=tok), tasks)
    # closing the pool's generator shuts the pool down now, not whenever it is garbage-collected
    closer = contextlib.closing(results) if opts.workers > 1 else contextlib.nullcontext()
    with bar, closer:
        for tokens, sidecar, text_bytes, n_docs in results:
            split = "val" if counts["val"]["docs"] < opts.val_docs else "train"
            sinks[split].append(tokens)
            if split == "val" and sidecar is not None:
                side_sink.append(sidecar)
            counts[split]["docs"] += n_docs
            counts[split]["text_bytes"] += text_bytes
            bar.update(n_docs)
            mb = (counts["val"]["text_bytes"] + counts["train"]["text_bytes"]) / 1e6
            bar.set_postfix_str(f"{mb / max(time.perf_counter() - started, 1e-9):.1f} MB/s", refresh=False)
    return sinks, side_sink, counts, time.perf_counter() - started


def _export(opts: PrepareOptions, tok, input_files, staging: Path) -> tuple[dict, list[Path]]:
    """Write every shard into `staging`; return the manifest and the files to move into place."""
    with_sidecar = tok.transform != IDENTITY or opts.byte_sidecar
    sinks, side_sink, counts, seconds = _encode_all(opts, tok, input_files, staging, with_sidecar)
    named = ", ".join(str(p) for p in input_files[:3]) + (", ..." if len(input_files) > 3 else "")
    if counts["val"]["docs"] < opts.val_docs:
        raise PgolfError(
            f"the inputs ({named}) hold {counts['val']['docs']} documents, fewer than --val-docs {opts.val_docs}; "
            "the val split would be short"
        )
    if sinks["val"].total < 2:
        raise PgolfError(f"the val documents of {named} hold no text: the val split would have nothing to score")
    if not counts["train"]["docs"]:
        raise PgolfError(
            f"no documents left for the train split: the inputs ({named}) hold {counts['val']['docs']} "
            f"documents and --val-docs {opts.val_docs} takes them all"
        )
    if sinks["train"].total <= counts["train"]["docs"]:  # nothing but the BOS of each document
        raise PgolfError(f"the train documents of {named} hold no text: the train split would be empty")
    written = {s: sinks[s].close() for s in sinks}
    sidecars = side_sink.close()
    manifest = _manifest(opts, tok, input_files, counts, written, sidecars, staging, seconds)
    if manifest["splits"]["val"]["scored_bytes"] <= 0:
        raise PgolfError(f"the val documents of {named} are worth 0 bytes: val_bpb would be undefined")
    if written["train"]:  # frontier-spec F10: no val document may also be a training document
        manifest["overlap"] = scan_overlap(staging, tok.bos_id, workers=opts.workers).as_dict()
    return manifest, [*written["val"], *written["train"], *sidecars]


def _manifest(opts, tok, input_files, counts, written, sidecars, staging, seconds) -> dict:
    val_tokens = shards.load_split(staging, "val", tok.vocab_size)
    side = shards.load_sidecar(staging, val_tokens, tok.bos_id) if sidecars else None
    position_bytes, source = position_bytes_for(val_tokens, tok, side if tok.transform != IDENTITY else None)
    scored_bytes = int(position_bytes.sum())
    splits = {}
    for split in ("val", "train"):
        entries = [_file_entry(p) for p in written[split]]
        splits[split] = {
            "docs": counts[split]["docs"],
            "tokens": sum(e["tokens"] for e in entries),
            "text_bytes": counts[split]["text_bytes"],
            "shards": entries,
        }
    splits["val"].update(
        scored_tokens=int(val_tokens.size - 1),
        scored_bytes=scored_bytes,
        byte_source=source,
        bytes_per_token=scored_bytes / max(val_tokens.size - 1, 1),
        sidecars=[_file_entry(p) for p in sidecars],
    )
    total_mb = (counts["val"]["text_bytes"] + counts["train"]["text_bytes"]) / 1e6
    return {
        "format": MANIFEST_FORMAT,
        "pgolf_version": pgolf.__version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tokenizer": {
            "path": str(Path(tok.path).resolve()),
            "sha256": sha256_file(tok.path),
            "vocab_size": tok.vocab_size,
            "bos_id": tok.bos_id,
            "transform": tok.transform,
        },
        "inputs": [{"path": str(p.resolve()), "bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in input_files],
        "text_field": opts.text_field,
        "val_docs": opts.val_docs,
        "shard_tokens": opts.shard_tokens,
        "append_eos": False,
        "splits": splits,
        "throughput": {"seconds": round(seconds, 3), "workers": opts.workers,
                       "mb_per_s": round(total_mb / max(seconds, 1e-9), 3)},
    }
