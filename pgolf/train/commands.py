"""The `pgolf train` and `pgolf export` subcommands."""
from __future__ import annotations

import argparse
from pathlib import Path

OVERRIDE_HELP = ("settings as section.key=value or with the challenge's names, e.g. train.iterations=500, "
                 "ITERATIONS=500, DATA_PATH=./data/datasets/fineweb10B_sp1024 (environment variables of those names "
                 "apply too)")


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a model, export it and score the exported file",
                       description="Also runs under torchrun: torchrun --nproc_per_node=8 -m pgolf.train ...")
    t.add_argument("--config", default="baseline", help="a preset name (see pgolf/configs) or a .toml path")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDE_HELP)
    t.set_defaults(func=_train)

    e = sub.add_parser("export", help="re-export a training checkpoint as an artifact")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("--out", type=Path, required=True, help="artifact path to write")
    e.add_argument("--quant", choices=["int8", "int6"], default=None)
    e.add_argument("--codec", choices=["zlib", "brotli", "zstd", "lzma"], default=None)
    e.add_argument("--code-bytes", choices=["raw", "wrapped"], default=None)
    e.set_defaults(func=_export)


def _train(args) -> None:
    from pgolf.config import load_config
    from pgolf.train.trainer import run_training

    cfg = load_config(args.config, args.overrides)
    result = run_training(cfg, preset=args.config)
    if result.is_main:
        print(f"val_bpb {result.final.val_bpb:.6f} (val_loss {result.final.val_loss:.6f}) after {result.steps} steps; "
              f"{result.export.summary()}; run dir {result.run_dir}")


def _export(args) -> None:
    from pgolf.config import from_dict
    from pgolf.export.export import export_model, run_meta
    from pgolf.train.checkpoint import load_checkpoint

    state = load_checkpoint(args.checkpoint)
    cfg = from_dict(state["config"], str(args.checkpoint))
    for key, value in (("quant", args.quant), ("codec", args.codec), ("code_bytes", args.code_bytes)):
        if value is not None:
            setattr(cfg.export, key, value)
    report, _ = export_model(state["model"], cfg.to_dict()["model"], cfg.export, args.out,
                             meta=run_meta(cfg, state["step"]))
    print(report.summary())
