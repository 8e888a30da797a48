"""How a parsed command runs: KEY=VALUE overrides after options, and a clean exit for every
expected failure. Shared by `pgolf` (pgolf.cli) and `python -m pgolf.train` (torchrun's entry,
which ships without the rest of the CLI)."""
from __future__ import annotations

import argparse
import sys

from pgolf.errors import PgolfError


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    args, extra = parser.parse_known_args(argv)
    if extra:  # KEY=VALUE overrides may come after options (argparse stops at the first positional run)
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.func(args)
    except PgolfError as e:
        print(f"pgolf: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM where a command turns it into one
        print(f"pgolf: stopped by {e.args[0] if e.args else 'SIGINT'}", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    return 0
