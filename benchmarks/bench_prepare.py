"""`pgolf data prepare` throughput, in MB of UTF-8 text per second (and per core).

Runs the real command (`python -m pgolf data prepare`) in a subprocess, as a user would,
and reads the encode-loop throughput from the manifest it writes (process-pool start-up
included; manifest hashing excluded). Corpus: the real FineWeb sample in ../shared when
present, else the embedded BBC corpus. Tokenizers: the challenge's sp1024 and sp8192,
and the CaseOps sp8192 with every document in val (transform + byte sidecar: the slowest
path). Median of `--repeats` runs.

    python benchmarks/bench_prepare.py [--shared ../shared] [--repeats 3]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import header


def run_prepare(corpus: Path, model: Path, out: Path, workers: int, val_docs: int) -> float:
    subprocess.run([sys.executable, "-m", "pgolf", "data", "prepare", str(corpus), "--tokenizer", str(model),
                    "--out", str(out), "--workers", str(workers), "--val-docs", str(val_docs), "--quiet",
                    "--overwrite"], check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "manifest.json").read_text())["throughput"]["mb_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(header("python " + " ".join(sys.argv)))
    tok_dir = args.shared / "data" / "tokenizers"
    tokenizers = {
        "sp1024": tok_dir / "alt" / "fineweb_1024_bpe_bytefallback.model",
        "sp8192": tok_dir / "fineweb_8192_bpe.model",
        "caseops (all val, sidecar)": tok_dir / "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model",
    }
    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.shared / "data" / "corpora" / "fineweb_legal_pilot_2800.jsonl.gz"
        if not corpus.is_file():
            from pgolf.data.embedded import bbc_news_documents

            corpus = Path(tmp) / "bbc.jsonl.gz"
            with gzip.open(corpus, "wt") as f:
                f.writelines(json.dumps({"text": d}) + "\n" for d in bbc_news_documents())
        with gzip.open(corpus, "rt") as f:
            n_docs = sum(1 for _ in f)
        print(f"corpus: {corpus.name} ({n_docs} docs)\n")
        print("| tokenizer | workers | MB/s | MB/s per core |")
        print("|---|---:|---:|---:|")
        cores = os.cpu_count() or 1
        for name, model in tokenizers.items():
            if not model.is_file():
                print(f"| {name} | - | missing {model} | |")
                continue
            val_docs = n_docs if "caseops" in name else 200
            for workers in sorted({1, cores}):
                rate = statistics.median(run_prepare(corpus, model, Path(tmp) / "out", workers, val_docs)
                                         for _ in range(args.repeats))
                print(f"| {name} | {workers} | {rate:.2f} | {rate / workers:.2f} |")


if __name__ == "__main__":
    main()
