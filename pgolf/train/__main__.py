"""`python -m pgolf.train [--config PRESET] [KEY=VALUE ...]`: torchrun's entry, `pgolf train`
without the rest of the CLI (so the code a training run counts is only what it imports).
`python -m pgolf.train export CHECKPOINT --out FILE` re-exports."""
import sys

from pgolf.commandline import run
from pgolf.train.commands import entry_parser

argv = sys.argv[1:]
if not argv or argv[0] not in ("train", "export", "--version", "-h", "--help"):
    argv = ["train", *argv]  # the default command
sys.exit(run(entry_parser(), argv))
