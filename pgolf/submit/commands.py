"""The `pgolf submit` subcommand: argument parsing and hand-off."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("submit", help="write the records folder of a set of seed runs (packed train_gpt.py included)",
                       description="RUN_DIRs are `pgolf train` run directories of one recipe, one per seed.")
    s.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    s.add_argument("--out", type=Path, required=True, help="the records folder to create (must be new or empty)")
    s.add_argument("--author", required=True)
    s.add_argument("--github-id", required=True)
    s.add_argument("--name", required=True, help="the submission's title")
    s.add_argument("--track", default="10min_16mb", choices=["10min_16mb", "non_record_16mb"])
    s.add_argument("--hardware", default="", help="e.g. '8xH100 80GB SXM' (default: from the run log)")
    s.add_argument("--against", nargs="+", default=None, metavar="RUN", help="reference runs for the p-value")
    s.add_argument("--score", type=float, default=None, help="reference val_bpb for the p-value")
    s.add_argument("--no-verify", action="store_true",
                   help="skip rescoring each artifact with the packed script in a process without pgolf")
    s.set_defaults(func=_submit)

    p = sub.add_parser("pack", help="write the packed train_gpt.py of a preset and print its counted code bytes")
    p.add_argument("--config", default="baseline", help="preset name or .toml")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (environment variables ignored)")
    p.set_defaults(func=_pack)


def _submit(args) -> None:
    from pgolf.submit.records import SubmitOptions, write_submission

    sub = write_submission(args.runs, SubmitOptions(args.out, args.author, args.github_id, args.name, args.track,
                                                    args.hardware, args.against, args.score, not args.no_verify))
    p = "" if sub["p_value"] is None else f", p={sub['p_value']:.4g}"
    print(f"{args.out}: val_bpb {sub['val_bpb']:.8f} (std {sub['val_bpb_std']:.8f}, {len(sub['seeds'])} seeds{p}); "
          f"bytes_total {sub['bytes_total']:,} (code {sub['bytes_code']:,})")


def _pack(args) -> None:
    from pgolf.config import load_config
    from pgolf.export.pack import pack
    from pgolf.fileio import atomic_write_bytes

    packed = pack(load_config(args.config, args.overrides, env={}))
    atomic_write_bytes(args.out, packed.script)
    print(f"{args.out}: {packed.code_bytes:,} counted code bytes ({len(packed.files)} files, {packed.source_bytes:,} B "
          f"source, {packed.minified_bytes:,} B minified)")
