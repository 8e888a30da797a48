"""`pgolf demo`: the whole pipeline on the embedded corpus, on a CPU, in minutes.

BBC News articles (a packaged corpus, no download) -> a 1024-piece tokenizer trained on
the training articles -> BOS-prefixed shards (the first 225 articles are val) -> the
smoke preset (the baseline architecture, scaled down) -> int8+zlib artifact -> val_bpb
scored from the artifact file.
"""
from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

VAL_DOCS = 225
VOCAB = 1024


def prepare_demo_data(workdir: str | Path, progress: bool = True) -> tuple[Path, Path]:
    """The embedded corpus as challenge-format shards: (data directory, tokenizer path)."""
    from pgolf.data.embedded import bbc_news_documents
    from pgolf.data.prepare import PrepareOptions, prepare
    from pgolf.data.tokenizer_training import train_tokenizer

    workdir = Path(workdir)
    docs = bbc_news_documents()
    corpus = workdir / "bbc_news.jsonl.gz"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(corpus, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": d}) + "\n" for d in docs)
    print(f"[demo] {len(docs)} BBC News articles -> {corpus}")

    tokenizer = train_tokenizer(docs[VAL_DOCS:], workdir / "tokenizer" / f"bbc_{VOCAB}.model", VOCAB)
    print(f"[demo] trained a {VOCAB}-piece tokenizer on the {len(docs) - VAL_DOCS} training articles")

    data_dir = workdir / "data"
    manifest = prepare(PrepareOptions(inputs=[corpus], tokenizer=tokenizer.path, out_dir=data_dir, val_docs=VAL_DOCS,
                                      shard_tokens=500_000, overwrite=True, progress=progress))
    val = manifest["splits"]["val"]
    print(f"[demo] shards: {manifest['splits']['train']['tokens']:,} train tokens, {val['tokens']:,} val tokens "
          f"({val['bytes_per_token']:.3f} bytes/token)")
    return data_dir, Path(tokenizer.path)


def run_demo(workdir: str | Path = "runs/demo", overrides: list[str] = (), progress: bool = True):
    # Imported here so that `pgolf --help` does not load torch.
    from pgolf.config import load_config
    from pgolf.train.plots import plot_run
    from pgolf.train.trainer import run_training

    workdir = Path(workdir)
    started = time.perf_counter()
    data_dir, tokenizer = prepare_demo_data(workdir, progress)
    cfg = load_config("smoke", [f"data.path={data_dir}", f"data.tokenizer={tokenizer}",
                                f"run.out_dir={workdir}", "run.name=run", "run.overwrite=true",
                                f"run.progress={progress}", *overrides])
    result = run_training(cfg, preset="smoke")
    print(f"[demo] val_bpb {result.final.val_bpb:.4f} (from the artifact file), {result.export.summary()}, "
          f"{result.steps} steps, total {time.perf_counter() - started:.0f} s; outputs in {result.run_dir}")
    plot_run(result.run_dir)  # after the score line: a plotting failure cannot hide it
    return result


def register(sub) -> None:
    d = sub.add_parser("demo", help="the whole pipeline on the embedded BBC corpus, on CPU, in a few minutes")
    d.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    d.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="settings on top of the smoke preset")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=lambda args: run_demo(args.workdir, args.overrides, progress=not args.quiet))
