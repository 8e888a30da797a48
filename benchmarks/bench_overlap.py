"""Train/val overlap scan speed (`pgolf.data.overlap.scan_overlap`), in train tokens per second.

Writes a generated dataset (random documents of 100-2000 tokens, mean ~1,000 as FineWeb's,
vocab 8192) of `--shards` train shards of `--shard-tokens` and one val shard of
`--val-docs` documents, then times the full scan (val hashing included) on the page-cache
warm files. Best of `--repeats`. One val document is planted near the end so the scan must
carry it to a hit.

    python benchmarks/bench_overlap.py [--shards 4] [--shard-tokens 25000000] [--repeats 2] [--workers 1 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from harness import header
from pgolf.data import shard_writer, shards
from pgolf.data.overlap import scan_overlap, tokens_per_step

BOS = 1


def random_stream(rng, n_tokens: int) -> np.ndarray:
    lengths = rng.integers(100, 2000, size=n_tokens // 1000 + 10)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths + 1), n_tokens) + 1]
    out = rng.integers(2, 8192, size=int((lengths + 1).sum()), dtype=np.uint16)
    out[np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])] = BOS
    return out[:n_tokens]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--shard-tokens", type=int, default=25_000_000)
    ap.add_argument("--val-docs", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    print(header("python " + " ".join(sys.argv)))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        val = random_stream(rng, args.val_docs * 1050)
        shard_writer.write_shard(d / shards.shard_name("val", 0), val)
        doc = val[1:][: np.argmax(val[1:] == BOS)]  # the first val document
        for i in range(args.shards):
            stream = random_stream(rng, args.shard_tokens)
            if i == args.shards - 1:
                at = args.shard_tokens - 5000
                stream[at] = BOS
                stream[at + 1:at + 1 + doc.size] = doc
                stream[at + 1 + doc.size] = BOS
            shard_writer.write_shard(d / shards.shard_name("train", i), stream)
        print("| shards x tokens | train tokens | val docs | workers | seconds | tokens/s |")
        print("|---|---:|---:|---:|---:|---:|")
        for workers in args.workers:
            best = None
            for _ in range(args.repeats):
                r = scan_overlap(d, tokens_per_step=tokens_per_step(786_432, 8, 1), workers=workers)
                best = r if best is None or r.seconds < best.seconds else best
            assert best.hits == 1 and best.first_step == 128, best.summary()
            print(f"| {args.shards} x {args.shard_tokens:,} | {best.train_tokens:,} | {best.val_docs:,} | {workers} | "
                  f"{best.seconds:.2f} | {best.tokens_per_second / 1e6:.1f}M |")


if __name__ == "__main__":
    main()
