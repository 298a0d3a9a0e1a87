"""Train a birdkeras model: python scripts/train.py --cfg FILE [--set a.b=c ...] [--workdir DIR]."""

import sys

from birdkeras.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
