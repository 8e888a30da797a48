"""Counted code bytes of the packed train_gpt.py per preset (`pgolf.export.pack`: the configuration's own import
closure, minified, brotli-11, base85, two-line exec wrapper), and what dominates the record_1855 one.

    python benchmarks/bench_submit.py [--presets smoke baseline gdn record_1855 frontier]
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from importlib.metadata import version

import brotli

from harness import header
from pgolf.config import load_config
from pgolf.export.pack import code_files, pack, unpack_files

def breakdown(cfg) -> None:
    """Each file's share: its packed text (as the script carries it) brotli-11'd alone (indicative: the script
    compresses them together), and how much the script shrinks without it (its marginal cost)."""
    _, readable, _ = code_files(cfg)
    packed = unpack_files(pack(cfg).script)
    whole = _compressed(packed)
    rows, groups = [], defaultdict(int)
    for name, small in packed.items():
        size = len(brotli.compress(small.encode("utf-8"), quality=11))
        marginal = whole - _compressed({n: t for n, t in packed.items() if n != name})
        rows.append((marginal, size, len(readable[name].encode("utf-8")), len(small.encode("utf-8")), name))
        parts = name.split("/")
        groups[parts[0] if parts[0] != "pgolf" or len(parts) == 2 else f"pgolf/{parts[1]}"] += marginal
    total = sum(r[0] for r in rows)
    print(f"\nthe files' brotli stream: {whole:,} B; their marginal costs sum to {total:,} B; by package:")
    for group, size in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {group:<22} {size:>7,} B  {100 * size / total:5.1f} %")
    print("largest files (marginal / brotli alone / source / packed text, B):")
    for marginal, size, src, small, name in sorted(rows, reverse=True)[:15]:
        print(f"  {name:<36} {marginal:>6,} {size:>6,} {src:>7,} {small:>7,}")


def _compressed(files: dict[str, str]) -> int:
    return len(brotli.compress(repr(files).encode("utf-8"), quality=11, lgwin=24))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=["smoke", "baseline", "gdn", "record_1855", "frontier"])
    args = ap.parse_args()
    print(header("python " + " ".join(sys.argv)))
    print(f"brotli {version('brotli')}; minifier: pgolf.export.minify (stdlib ast + tokenize)")
    print("| preset | modules | native | source B | minified B | counted code B (train_gpt.py) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.presets:
        p = pack(load_config(name, env={}))
        print(f"| {name} | {len(p.closure.modules)} | {len(p.closure.native)} | {p.source_bytes:,} | "
              f"{p.minified_bytes:,} | {p.code_bytes:,} |")
    if "record_1855" in args.presets:
        breakdown(load_config("record_1855", env={}))


if __name__ == "__main__":
    main()
