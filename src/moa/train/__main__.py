"""``python -m moa.train [--preset …] [key=value …]``: the same as ``moa train``."""

import sys

from moa.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
