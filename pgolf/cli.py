"""`pgolf` command line: one parser, subcommands registered by the packages that own them."""
from __future__ import annotations

import argparse
import sys

from pgolf import __version__
from pgolf.commandline import run


def build_parser() -> argparse.ArgumentParser:
    from pgolf import demo, stats
    from pgolf.check import commands as check_commands
    from pgolf.submit import commands as submit_commands
    from pgolf.data import commands as data_commands
    from pgolf.eval import commands as eval_commands
    from pgolf.train import commands as train_commands

    parser = argparse.ArgumentParser(prog="pgolf", description="Parameter Golf engine")
    parser.add_argument("--version", action="version", version=f"pgolf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo.register(sub)
    train_commands.register(sub)
    eval_commands.register(sub)
    data_commands.register(sub)
    stats.register(sub)
    check_commands.register(sub)
    submit_commands.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
