"""The n-gram state build (pgolf.ngram.build_hints) in tokens/s on one CPU core, native and fallback.

Streams:
- synthetic: Zipf-distributed ids over 8192 with ~2% of positions inside copies of earlier 32-token
  runs (so long contexts recur and hints fire), at the sizes given, up to the full val stream's
  47,851,521 tokens (`--sizes 47851521`);
- real: every document of ../shared/data/corpora (29.3M tokens) tokenized with fineweb_8192_bpe (BOS-prefixed),
  all of it (fewer tokens than the val stream: the time at 47.85M is extrapolated from it, assuming
  the per-token cost stays what it is at the real stream's size; the synthetic sizes show how it grows).

Each build is timed end to end (input checks, table allocation, the pass, the output arrays), median
of `--repeats`; wall and process CPU seconds are both reported (the C++ pass is single-threaded, so CPU
time is the one-core cost even on a busy machine). Also timed: writing and reading back the shared file.

    python benchmarks/bench_ngram.py [--sizes 1000000,8000000,47851521] [--real] [--numpy-size 4000000]
"""
from __future__ import annotations

import argparse
import gzip
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness import header

from pgolf.ngram import NgramSettings, build_hints, native_available
from pgolf.ngram.share import read_hints, write_hints

VAL_TOKENS = 47_851_521
VOCAB = 8192


def synthetic(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, VOCAB + 1)
    tokens = rng.choice(VOCAB, size=n, p=p / p.sum()).astype(np.int32)
    run = 32
    for dst in np.sort(rng.choice(np.arange(run * 4, max(n - run, run * 4 + 1)), size=n // 50 // run, replace=False)):
        src = int(rng.integers(0, dst - run))
        tokens[dst:dst + run] = tokens[src:src + run]
    return tokens


def real(shared: Path, cache: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, document starts) of every corpus document, sp8192, BOS-prefixed."""
    if cache is not None and cache.is_file():
        z = np.load(cache)
        return z["tokens"], z["starts"]
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(shared / "data" / "tokenizers" / "fineweb_8192_bpe.model"))
    parts, starts, n = [], [], 0
    for corpus in sorted((shared / "data" / "corpora").glob("*.jsonl.gz")):
        with gzip.open(corpus, "rt", encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for line in f]
        for ids in sp.encode(texts, out_type=int, num_threads=2):
            starts.append(n)
            parts.append(np.asarray([sp.bos_id(), *ids], dtype=np.int32))
            n += len(ids) + 1
    tokens, starts = np.concatenate(parts), np.asarray(starts, dtype=np.int64)
    if cache is not None:
        np.savez(cache, tokens=tokens, starts=starts)
    return tokens, starts


def timed(fn, repeats: int) -> tuple[float, float, object]:
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), out


def row(name: str, n: int, backend: str, wall: float, cpu: float, fired: int) -> None:
    print(f"| {name} | {n:,} | {backend} | {wall:.2f} | {cpu:.2f} | {n / cpu / 1e6:.2f} | "
          f"{VAL_TOKENS / (n / cpu):.1f} | {fired / n:.3%} | {peak_rss_gb():.1f} |", flush=True)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux: the process's peak so far


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,8000000,47851521", help="synthetic stream sizes")
    ap.add_argument("--numpy-size", type=int, default=4_000_000, help="synthetic size for the fallback (0: skip)")
    ap.add_argument("--real", action="store_true", help="also the tokenized corpora of ../shared")
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--cache", type=Path, default=None, help="npz to keep the tokenized real stream in")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(header("python " + " ".join(sys.argv)))
    if not native_available():
        print("pgolf.ngram._ngram_state is not built: native rows are skipped (python setup.py build_ext --inplace)")
    settings = NgramSettings()  # the #2135 run: order 16, gate 0.8
    print("| stream | tokens | backend | wall s | CPU s | M tokens/s (CPU) | CPU s at 47.85M | hints fired | peak RSS GB |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    backends = ["native"] if native_available() else []
    for n in (int(s) for s in args.sizes.split(",") if s):
        tokens = synthetic(n)
        for backend in backends + (["numpy"] if n <= args.numpy_size else []):
            wall, cpu, h = timed(lambda: build_hints(tokens, VOCAB, settings=settings, backend=backend),
                                 1 if n > 10_000_000 else args.repeats)
            row("synthetic", n, backend, wall, cpu, h.fired)
    if args.numpy_size and args.numpy_size not in [int(s) for s in args.sizes.split(",") if s]:
        tokens = synthetic(args.numpy_size)
        wall, cpu, h = timed(lambda: build_hints(tokens, VOCAB, settings=settings, backend="numpy"), 1)
        row("synthetic", args.numpy_size, "numpy", wall, cpu, h.fired)
    if args.real:
        tokens, starts = real(args.shared, args.cache)
        order = np.random.default_rng(0).permutation(len(starts))  # a scoring order other than file order
        for backend in backends:
            for name, o in (("real, file order", None), ("real, shuffled doc order", order)):
                wall, cpu, h = timed(lambda: build_hints(tokens, VOCAB, doc_starts=starts, order=o, settings=settings,
                                                         backend=backend), args.repeats)
                row(name, len(tokens), backend, wall, cpu, h.fired)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "hints.bin"
            w_wall, _, _ = timed(lambda: write_hints(path, h), 1)
            r_wall, _, _ = timed(lambda: read_hints(path, len(tokens), settings), 1)
            print(f"\nshared file ({len(tokens):,} positions, {path.stat().st_size / 1e6:.0f} MB): "
                  f"write {w_wall:.2f} s, read + checksum {r_wall:.2f} s (wall)")


if __name__ == "__main__":
    main()
