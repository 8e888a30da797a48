"""The `pgolf data ...` subcommands: argument parsing and hand-off, nothing more."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="prepare, train tokenizers for, download and inspect challenge data")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="{prepare,tokenizer,download,inspect}")

    p = sub.add_parser("prepare", help="documents -> BOS-prefixed token shards (+ val byte sidecar for CaseOps)")
    p.add_argument("inputs", nargs="+", type=Path, help=".txt, .jsonl or .jsonl.gz files, or directories of them")
    p.add_argument("--tokenizer", required=True, type=Path, help="SentencePiece .model")
    p.add_argument("--out", required=True, type=Path, help="output dataset directory")
    p.add_argument("--val-docs", type=int, default=50_000, help="the first N documents become val (default 50000)")
    p.add_argument("--shard-tokens", type=int, default=10**8, help="tokens per shard (default 1e8)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="encoder processes (default: all cores)")
    p.add_argument("--max-docs", type=int, default=None, help="stop after N documents")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text (default: text)")
    p.add_argument("--byte-sidecar", action="store_true",
                   help="also write the original-byte val sidecar for an untransformed tokenizer")
    p.add_argument("--overwrite", action="store_true", help="replace shards already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_prepare)

    t = sub.add_parser("tokenizer", help="train a SentencePiece BPE model with the challenge's settings")
    t.add_argument("inputs", nargs="+", type=Path, help=".txt, .jsonl or .jsonl.gz files, or directories of them")
    t.add_argument("--out", required=True, type=Path, help="output path ending in .model (a .vocab is written beside it)")
    t.add_argument("--vocab-size", required=True, type=int)
    t.add_argument("--transform", choices=["identity", "caseops_v1"], default="identity",
                   help="train on CaseOps-transformed text, reserving its operators as ids 4..7")
    t.add_argument("--user-symbol", action="append", default=[], help="an extra reserved user symbol (repeatable)")
    t.add_argument("--max-docs", type=int, default=None, help="train on the first N documents only")
    t.add_argument("--text-field", default="text")
    t.set_defaults(func=_tokenizer)

    d = sub.add_parser("download", help="fetch the published FineWeb export of a variant (resumable)")
    d.add_argument("--variant", required=True, choices=["sp1024", "sp8192", "caseops"])
    d.add_argument("--out", type=Path, default=Path("data"), help="local data root (default ./data)")
    d.add_argument("--train-shards", type=int, default=None, help="fetch only the first K train shards (default: all)")
    d.add_argument("--mirror", type=Path, default=None, help="copy from a local directory laid out like the hub repo")
    d.add_argument("--remote-root", default=None, help="subfolder of the repo holding the export (default: datasets)")
    d.add_argument("--refresh-manifest", action="store_true", help="re-fetch manifest.json even if present")
    d.set_defaults(func=_download)

    i = sub.add_parser("inspect", help="validate a dataset directory and print a JSON summary")
    i.add_argument("directory", type=Path)
    i.add_argument("--tokenizer", type=Path, default=None, help="check ids against its vocab and report val bytes/token")
    i.add_argument("--no-hashes", action="store_true", help="skip sha256 verification against the manifest")
    i.set_defaults(func=_inspect)


def _prepare(args) -> None:
    from pgolf.data.prepare import PrepareOptions, prepare

    manifest = prepare(PrepareOptions(
        inputs=args.inputs, tokenizer=args.tokenizer, out_dir=args.out, val_docs=args.val_docs,
        shard_tokens=args.shard_tokens, byte_sidecar=args.byte_sidecar, workers=args.workers,
        max_docs=args.max_docs, text_field=args.text_field, overwrite=args.overwrite, progress=not args.quiet,
    ))
    val, train = manifest["splits"]["val"], manifest["splits"]["train"]
    print(f"val:   {val['docs']} docs, {val['tokens']} tokens, {len(val['shards'])} shards, "
          f"{val['scored_bytes']} scored bytes ({val['byte_source']}), {val['bytes_per_token']:.5f} bytes/token")
    print(f"train: {train['docs']} docs, {train['tokens']} tokens, {len(train['shards'])} shards")
    print(f"{manifest['throughput']['mb_per_s']} MB/s with {manifest['throughput']['workers']} workers -> {args.out}")


def _tokenizer(args) -> None:
    from pgolf.data.documents import iter_documents
    from pgolf.data.tokenizer_training import train_tokenizer

    tok = train_tokenizer(iter_documents(args.inputs, args.text_field), args.out, args.vocab_size,
                          transform=args.transform, user_symbols=args.user_symbol, max_docs=args.max_docs,
                          source=f"the inputs ({', '.join(map(str, args.inputs))})")
    print(f"wrote {tok.path} (vocab {tok.vocab_size}, transform {tok.transform})")


def _download(args) -> None:
    from pgolf.data.download import MirrorSource, download

    plan = download(args.variant, args.out, args.train_shards,
                    source=MirrorSource(args.mirror) if args.mirror else None,
                    remote_root=args.remote_root, refresh_manifest=args.refresh_manifest)
    print(f"DATA_PATH={plan.dataset_dir}")
    print(f"TOKENIZER_PATH={plan.tokenizer_paths[0]}")


def _inspect(args) -> None:
    from pgolf.data.inspect import inspect_dataset

    print(json.dumps(inspect_dataset(args.directory, args.tokenizer, verify_hashes=not args.no_hashes), indent=2))
