"""The score ledger at the size of a full LoRA TTT eval: what recording and checking C3 cost.

Simulates the #1855 TTT schedule's ledger traffic (no model): ~50,000 documents of geometric
length (mean 957 tokens, the challenge val set's 47.85M / 50,000), batches of 64 longest first,
chunks of 48 scored, then each non-last chunk one update reading its window (<= 2048 tokens).
Prints the updates, the ranges they hold (and the positions those cover: what a ledger of
position lists would store, 8 bytes each), the time to record them, the time of c3_violations,
and the process's peak RSS.

    python benchmarks/bench_ledger.py [--tokens 47850000]
"""
from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np

from harness import header
from pgolf.metric.ledger import ScoreLedger
from pgolf.metric.ledger_audit import c3_violations


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=47_850_000)
    ap.add_argument("--chunk", type=int, default=48)
    ap.add_argument("--context", type=int, default=2048)
    args = ap.parse_args()
    print(header("python " + " ".join(sys.argv)))
    rng = np.random.default_rng(0)
    lens = rng.geometric(1 / 957, size=args.tokens // 900 + 10)
    lens = lens[np.cumsum(lens) < args.tokens - 1]
    starts = np.r_[0, np.cumsum(lens)[:-1]]
    ends = starts + lens
    ledger, c = ScoreLedger(int(ends[-1]) + 1), args.chunk
    order = np.argsort(-lens, kind="stable")
    t0, updates, ranges, reads = time.perf_counter(), 0, 0, 0
    for b in range(0, order.size, 64):
        s, e = starts[order[b:b + 64]], ends[order[b:b + 64]]
        n_chunks = (e - s + c - 1) // c
        for ci in range(int(n_chunks.max())):
            active = ci < n_chunks
            first, last = s + 1 + ci * c, np.minimum(s + (ci + 1) * c, e)
            ledger.scored(np.concatenate([np.arange(x, y + 1) for x, y in zip(first[active], last[active])]))
            train = active & (last < e)
            if train.any():
                a = np.maximum(last[train] - args.context, s[train] + 1)
                ledger.update_ranges(a, last[train])
                updates, ranges, reads = updates + 1, ranges + int(train.sum()), reads + int((last[train] - a + 1).sum())
    t1 = time.perf_counter()
    total, _ = c3_violations(ledger)
    t2 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("| documents | tokens | updates | ranges | positions read | record s | c3 check s | violations | peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {lens.size:,} | {int(ends[-1]) + 1:,} | {updates:,} | {ranges:,} | {reads:,} | {t1 - t0:.1f} | "
          f"{t2 - t1:.1f} | {total} | {rss:,.0f} |")


if __name__ == "__main__":
    main()
