"""The `pgolf train` and `pgolf export` subcommands."""
from __future__ import annotations

import argparse
import os
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
    e.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="export settings, e.g. export.matrix_bits=6 export.layout=grouped COMPRESSOR=auto "
                        "(environment variables of the export settings' names, e.g. EXPORT_METHOD, apply too)")
    e.set_defaults(func=_export)


def entry_parser() -> argparse.ArgumentParser:
    """The parser of `python -m pgolf.train` (and of the wrapped script the code bytes count):
    the train and export commands alone."""
    from pgolf import __version__

    parser = argparse.ArgumentParser(prog="python -m pgolf.train", description="pgolf train, under torchrun")
    parser.add_argument("--version", action="version", version=f"pgolf {__version__}")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def _train(args) -> None:
    from pgolf.config import load_config
    from pgolf.signals import sigterm_raises
    from pgolf.train.plots import plot_run
    from pgolf.train.trainer import run_training

    cfg = load_config(args.config, args.overrides)
    with sigterm_raises():
        result = run_training(cfg, preset=args.config)
    if result.is_main:
        print(f"val_bpb {result.final.val_bpb:.6f} (val_loss {result.final.val_loss:.6f}) after {result.steps} steps; "
              f"{result.export.summary()}; run dir {result.run_dir}")
        plot_run(result.run_dir)  # after the score line: a plotting failure cannot hide it


def _export(args) -> None:
    from pgolf.config import ENV_NAMES, from_dict, set_from_text
    from pgolf.errors import PgolfError
    from pgolf.export.export import run_meta
    from pgolf.export.offline import export_model, parts_table
    from pgolf.fileio import check_output_file
    from pgolf.train.checkpoint_read import load_checkpoint
    from pgolf.signals import sigterm_raises

    check_output_file(args.out, "--out")
    state = load_checkpoint(args.checkpoint)
    cfg = from_dict(state["config"], f"checkpoint {args.checkpoint}")
    # Defaults < the checkpoint's config < environment variables < the command line, as for train;
    # only export settings apply: everything else is the trained model's.
    for name, key in ENV_NAMES.items():
        if key.startswith("export.") and name in os.environ:
            set_from_text(cfg, key, os.environ[name], f"environment variable {name}")
    for item in args.overrides:
        key, sep, value = item.partition("=")
        key = ENV_NAMES.get(key, key)
        if not sep or not key.startswith("export."):
            raise PgolfError(f"pgolf export takes export settings only (export.key=value), got {item!r}")
        set_from_text(cfg, key, value, "command line")
    if cfg.export.logit_calib:  # not dropped silently: the file would score without it
        raise PgolfError("export.logit_calib=true: logit calibration is fitted by the trainer on its training clock "
                         "(it reads training data), not by pgolf export; pass export.logit_calib=false to export "
                         "without it")
    _check_weights_fit(state["model"], cfg, args.checkpoint)
    with sigterm_raises():
        report, _ = export_model(state["model"], cfg.to_dict()["model"], cfg.export, args.out,
                                 meta=run_meta(cfg, state["step"]), hessians=state.get("hessians"), run_config=cfg)
    print(report.summary())
    print(parts_table(report))


def _check_weights_fit(weights: dict, cfg, path: Path) -> None:
    """The checkpoint's weights must be the model its config describes (names and shapes)."""
    import torch

    from pgolf.errors import PgolfError
    from pgolf.model import GPT

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GPT(cfg.model).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if got != expected:
        wrong = sorted(set(got) ^ set(expected)) or sorted(k for k in got if got[k] != expected[k])
        raise PgolfError(f"checkpoint {path}: field 'model' does not fit its model config (first: {wrong[0]})")
