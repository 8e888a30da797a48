"""Artifact bytes of a preset's full-size model, exported with the preset's own settings.

The model is built on the CPU from a fixed seed (random init: no trained weights exist here),
its Hessians (GPTQ presets) are collected on random tokens, and it is exported exactly as
`pgolf train` would (`export_model`, the preset's method, bits, layout and codec). It measures
what the layout and quantization recipe do with the preset's tensors, not a trained model's
compressibility. It runs unchanged on code before and after the parameter-roles change.

    python benchmarks/bench_roles_bytes.py --preset gdn [--seed 0] [--calib 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness import header
from pgolf.config import load_config
from pgolf.export.offline import export_model, parts_table
from pgolf.model import GPT
from pgolf.quant.hessians import HessianCollector


def hessians_on_random_tokens(model: GPT, vocab: int, batches: int, seq_len: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    collector = HessianCollector(model)
    try:
        with torch.no_grad():
            for _ in range(batches):
                x = torch.randint(0, vocab, (2, seq_len), generator=g)
                model(x, x)
        return collector.hessians()
    finally:
        collector.remove()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="gdn")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calib", type=int, default=2, help="random batches of 2 x seq_len tokens for the Hessians")
    ap.add_argument("--seq-len", type=int, default=512)
    args = ap.parse_args()
    print(header("python " + " ".join(sys.argv)))
    cfg = load_config(args.preset, env={})
    torch.manual_seed(args.seed)
    model = GPT(cfg.model)
    hessians = None
    if cfg.export.method == "gptq":
        t = time.perf_counter()
        hessians = hessians_on_random_tokens(model, cfg.model.vocab_size, args.calib, args.seq_len, args.seed)
        print(f"hessians: {len(hessians)} in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report, art = export_model(model.state_dict(), cfg.to_dict()["model"], cfg.export, Path(tmp) / "a.pgolf",
                                   hessians=hessians)
    coded = sum(e.parts["q"].size for e in art.tensors.values() if e.scheme == "int_row")
    print(f"preset {args.preset}: {report.params:,} parameters, {coded:,} coded weights; "
          f"export {time.perf_counter() - t:.1f} s")
    print(report.summary())
    print(parts_table(report))


if __name__ == "__main__":
    main()
