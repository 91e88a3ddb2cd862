"""Train a long-document encoder: `python train.py attention=lsh` (see README for more); the same as `longdoc-train`."""

from longdoc.cli import train_main

if __name__ == "__main__":
    train_main()
