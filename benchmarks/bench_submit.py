"""Counted code bytes of the packed train_gpt.py per preset (`pgolf.submit.pack`), against pgolf's
whole-package wrapper (`pgolf.export.code_size`, mode "wrapped").

    python benchmarks/bench_submit.py [--presets smoke baseline gdn]
"""
from __future__ import annotations

import argparse
import sys

from importlib.metadata import version

from harness import header
from pgolf.export.code_size import count_code_bytes
from pgolf.submit.pack import pack
from pgolf.export.trace import import_closure


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=["smoke", "baseline", "gdn"])
    args = ap.parse_args()
    print(header("python " + " ".join(sys.argv)))
    print(f"python-minifier {version('python-minifier')}, brotli {version('brotli')}")
    closure = import_closure()
    whole = count_code_bytes("wrapped")
    print(f"closure: {len(closure.modules)} modules + {len(closure.native)} native sources; "
          f"whole package: {len(whole.files)} files, {whole.raw_bytes:,} B raw, {whole.counted_bytes:,} B wrapped")
    print("| preset | files | source B | minified B | counted code B (train_gpt.py) |")
    print("|---|---:|---:|---:|---:|")
    for preset in args.presets:
        p = pack(preset, closure)
        print(f"| {preset} | {len(p.files)} | {p.source_bytes:,} | {p.minified_bytes:,} | {p.code_bytes:,} |")


if __name__ == "__main__":
    main()
