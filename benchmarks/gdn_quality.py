"""GatedDeltaNet versus the transformer at equal training wall-clock, on the same data, scored
with the canonical BPB from each run's artifact. Only the sequence mixer differs: the
smoke preset's blocks with attention, or with GatedDeltaNet of the same width and heads.

    python benchmarks/gdn_quality.py --seconds 150 --seeds 3            # CPU: the embedded corpus
    python benchmarks/gdn_quality.py --steps 500 --seeds 3              # equal steps: the same tokens
    python benchmarks/gdn_quality.py --data D --tokenizer T --preset baseline --seconds 600   # GPU

On a CPU this is a proxy: GDN runs its torch chunked path there and attention its CPU
kernels, so the steps each gets in the same time are not those of a GPU.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile

from harness import header
from pgolf.config import load_config
from pgolf.demo import prepare_demo_data
from pgolf.train.trainer import run_training

GDN = ["model.arch=gdn", "model.kv_share_stride=1"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--data")
    ap.add_argument("--tokenizer")
    ap.add_argument("--seconds", type=float, default=150.0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=0, help="equal steps (same tokens) instead of equal wall-clock")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    print(header("python " + " ".join(sys.argv)))
    with tempfile.TemporaryDirectory() as work:
        data, tok = (args.data, args.tokenizer) if args.data else prepare_demo_data(work, progress=False)
        budget = ([f"train.iterations={args.steps}", "train.max_wallclock_seconds=0", "train.warmdown=step"]
                  if args.steps else ["train.iterations=1000000", f"train.max_wallclock_seconds={args.seconds}",
                                      "train.warmdown=time"])
        rows = {}
        for name, extra in (("transformer", []), ("gdn", GDN)):
            for seed in range(args.seeds):
                cfg = load_config(args.preset, [f"data.path={data}", f"data.tokenizer={tok}", f"run.out_dir={work}",
                                                f"run.name={name}-{seed}", f"run.seed={1337 + seed}",
                                                "run.progress=false", *budget,
                                                "train.val_every=0", *extra, *args.overrides])
                r = run_training(cfg)
                rows.setdefault(name, []).append((r.final.val_bpb, r.steps))
                print(f"{name} seed {1337 + seed}: val_bpb {r.final.val_bpb:.4f} after {r.steps} steps", flush=True)
    print("\n| model | seeds | val_bpb mean | std | steps (mean) |")
    print("|---|---:|---:|---:|---:|")
    for name, rs in rows.items():
        bpbs = [b for b, _ in rs]
        std = statistics.stdev(bpbs) if len(bpbs) > 1 else float("nan")
        print(f"| {name} | {len(rs)} | {statistics.mean(bpbs):.4f} | {std:.4f} | "
              f"{statistics.mean(s for _, s in rs):.0f} |")


if __name__ == "__main__":
    main()
