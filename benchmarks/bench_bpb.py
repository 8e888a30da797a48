"""What the BPB accumulator adds to an eval pass.

Per batch it does one gather of bytes, one of targets, an index_add into the coverage
counts and two float64 sums. Its cost is set against the cheapest part of any eval pass,
the tied LM head + log-softmax CE for the same batch (the transformer body is extra), so
the ratio printed is an upper bound on the overhead. The one-off `result()` (coverage
check over the whole val stream) is timed at the real sp1024 val size.

    python benchmarks/bench_bpb.py [--device cuda]
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from harness import header, median_seconds
from pgolf.metric.bpb import BPBAccumulator

SP1024_VAL_TOKENS = 63_779_841  # 62,285 × 1024 scored + the leading BOS (spec §1.4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tokens", type=int, default=16 * 1024, help="targets per eval batch")
    args = ap.parse_args()
    dev = torch.device(args.device)
    print(header("python " + " ".join(sys.argv)))
    n = SP1024_VAL_TOKENS
    tokens = torch.randint(0, 1024, (n,), dtype=torch.int32, device=dev)
    pos_bytes = torch.randint(0, 5, (n,), dtype=torch.int32, device=dev)
    b = args.tokens
    positions = torch.arange(1, b + 1, device=dev)
    print(f"| V | targets/batch | head+CE ms | accumulator add ms | ratio |")
    print(f"|---|---:|---:|---:|---:|")
    for vocab in (1024, 8192):
        hidden = torch.randn(b, 512, device=dev, dtype=torch.bfloat16 if dev.type == "cuda" else torch.float32)
        weight = torch.randn(vocab, 512, device=dev, dtype=hidden.dtype) * 0.02
        targets = torch.randint(0, vocab, (b,), device=dev)

        def head_ce():
            logits = 30 * torch.tanh((hidden @ weight.T).float() / 30)
            return F.cross_entropy(logits, targets, reduction="none")

        nll = head_ce()
        acc = BPBAccumulator(tokens, pos_bytes)

        def add():
            acc.add(nll, positions, targets=tokens[positions])

        t_head, t_acc = median_seconds(head_ce), median_seconds(add)
        print(f"| {vocab} | {b} | {t_head * 1e3:.3f} | {t_acc * 1e3:.3f} | {t_acc / t_head:.2%} |")

    acc = BPBAccumulator(tokens, pos_bytes)
    everything = torch.arange(1, n, device=dev)
    for chunk in everything.split(1 << 22):
        acc.add(torch.ones(chunk.numel(), device=dev), chunk)
    t_result = median_seconds(acc.result, repeats=3, warmup=1)
    print(f"\nresult() over {n:,} val positions (coverage check + totals): {t_result * 1e3:.1f} ms once per eval")


if __name__ == "__main__":
    main()
