#!/usr/bin/env python3
"""dcgan: train a DCGAN on MNIST digits, sample from it, fetch its data.

    python dcgan.py                       # = train: trains, or resumes from checkpoints/
    python dcgan.py sample --num 64 --out grid.png
    python dcgan.py data                  # fetch and verify the dataset
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

from digitgan.config import DATASETS, TrainConfig, field_help, flag
from digitgan.errors import TrainingStopped, UsageError

COMMANDS = ("train", "sample", "data")
TYPES = {"int": int, "float": float, "str": str}  # dataclass field types are strings (postponed annotations)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value}")
    return value


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(2, f"error: {message} (see `python {self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dcgan.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="{train,sample,data}", parser_class=Parser)

    train = sub.add_parser("train", help="train, or resume from the newest checkpoint (the default command)")
    helps = field_help()
    for f in dataclasses.fields(TrainConfig):
        # Flags default to None so that only what the user typed overrides a preset or a saved run.
        train.add_argument(f"--{flag(f.name)}", dest=f.name, type=TYPES[f.type],
                           default=None, metavar=f.name.upper(),
                           help=f"{helps.get(f.name, '')} (default: {f.default})")
    train.add_argument("--fresh", action="store_true", help="start over instead of resuming (needs an empty "
                       "--checkpoint-dir, or --force)")
    train.add_argument("--force", action="store_true", help="with --fresh: move the existing run aside into "
                       "CHECKPOINT_DIR/previous-<time>/ (nothing is deleted)")

    sample = sub.add_parser("sample", help="write a grid (.png) or raw array (.npy) of generated digits")
    sample.add_argument("--checkpoint-dir", default=TrainConfig.checkpoint_dir, help="use its newest checkpoint")
    sample.add_argument("--checkpoint", default=None, help="this checkpoint file instead")
    sample.add_argument("--num", type=_positive, default=64, help="how many images")
    sample.add_argument("--seed", type=int, default=0, help="noise seed: the same seed gives the same images")
    sample.add_argument("--out", default="grid.png", help="output file: .png (a grid) or .npy (N,1,32,32 float32 "
                        "in [-1, 1])")
    sample.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))

    data = sub.add_parser("data", help="fetch, verify and cache a dataset, printing what was done")
    data.add_argument("--dataset", default="mnist", choices=DATASETS)
    data.add_argument("--data-dir", default="", help="read the four IDX files from here instead")
    data.add_argument("--cache-dir", default=TrainConfig.cache_dir, help="where the MNIST cache goes")
    return parser


def cmd_train(args: argparse.Namespace) -> None:
    from digitgan.training import train
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if getattr(args, f.name) is not None}
    train(overrides, fresh=args.fresh, force=args.force)


def cmd_sample(args: argparse.Namespace) -> None:
    from digitgan.sampling import write_samples
    path = write_samples(args.out, args.num, args.seed, args.checkpoint_dir, args.checkpoint, args.device)
    print(f"wrote {args.num} samples to {path}")


def cmd_data(args: argparse.Namespace) -> None:
    from digitgan.data import load_uint8, prepare_mnist
    if args.dataset == "mnist" and not args.data_dir:
        prepare_mnist(args.cache_dir, say=print)
    for split in ("train", "test"):
        images, labels = load_uint8(args.dataset, split, args.data_dir, args.cache_dir)
        print(f"{args.dataset} {split}: {len(images)} images {images.shape[1]}x{images.shape[2]}, "
              f"{len(set(labels.tolist()))} classes")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "train")
    args = build_parser().parse_args(argv)
    try:
        {"train": cmd_train, "sample": cmd_sample, "data": cmd_data}[args.command](args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingStopped as e:
        print(f"training stopped: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
