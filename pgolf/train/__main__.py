import sys

from pgolf.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
