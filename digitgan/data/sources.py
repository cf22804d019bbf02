"""The built-in sources by name, and the lookups the other stages go through: source() (a built-in name, else a
folder), load_dataset(), check_images(), known_shape() and saved_shape(). Nothing outside this stage compares a
dataset's name."""

from __future__ import annotations

import sys
from typing import Any

from ..config import TrainConfig, cache_home
from ..errors import UsageError
from .dataset import Dataset
from .emoji import EMOJI
from .folder import Folder
from .mnist import FASHION_MNIST, MNIST
from .shape import Shape
from .source import Request, Source
from .stacked import STACKED_MNIST

BUILT_IN: dict[str, Source] = {s.name: s for s in (MNIST, FASHION_MNIST, STACKED_MNIST, EMOJI)}


def source(dataset: str, resolution: int = 0) -> Source:
    """What --dataset names: a built-in source, else a folder of pictures; with a resolution, refused (one line)
    where the data do not go that far."""
    src = BUILT_IN.get(dataset) or Folder(dataset)
    src.check_resolution(resolution)
    return src


def load_dataset(
    dataset: str,
    split: str = "train",
    data_dir: str = "",
    cache_dir: str = "",
    resolution: int = 32,
    channels: int = 0,
) -> Dataset:
    """One split ("train" or "test") of a dataset at the resolution, with the channels asked for (0: the data's
    own). Sources with no test set of their own (the emoji, folders) give a seeded hold-out as "test", kept out of
    "train"."""
    return source(dataset, resolution).load(split, resolution, channels, cache_home(cache_dir), data_dir)


def check_images(cfg: Any) -> None:
    """Refuse, before a run writes anything, pictures it cannot train on: a folder that does not exist or holds
    no readable image, a conditional run on pictures without classes, or fewer training images than a batch
    (freezing them on the way, into cfg.cache_dir)."""
    summary: list[str] = []  # said once the pictures are known to be enough
    asked = Request(cfg.resolution, cfg.channels, cfg.cache_dir, cfg.data_dir, cfg.workers)
    src = source(cfg.dataset, cfg.resolution)
    total, n, classes = src.sizes(asked, summary.append)
    if cfg.conditional == "on" and not classes:
        what = "put its pictures into two or more subfolders, one per class" if isinstance(src, Folder) else ""
        raise UsageError(
            f"--conditional on needs classes, and {cfg.dataset} has none: "
            + (what or "train it with --conditional off")
        )
    if abs(cfg.train_images) > n:
        raise UsageError(
            f"--train-images {cfg.train_images}: {cfg.dataset} has {n} training images; pass at most that, or 0 for all"
        )
    kept = cfg.train_images if cfg.train_images > 0 else n + cfg.train_images
    if kept < cfg.batch_size:
        what = (
            f"--train-images {cfg.train_images}"
            if cfg.train_images
            else (
                f"--dataset {cfg.dataset}: {total} usable images ({n} to train on, {total - n} held out to measure "
                f"quality),"
            )
        )
        raise UsageError(
            f"{what} fewer than a batch (--batch-size {cfg.batch_size}); add images or pass a smaller --batch-size"
        )
    for line in summary:
        print(line, file=sys.stderr)


def augmentation(cfg: Any) -> str:
    """What a config's --augment means for its data: auto resolved by the source."""
    return source(cfg.dataset).augment if cfg.augment == "auto" else cfg.augment


def known_shape(cfg: Any) -> Shape:
    """The shape of a config's data where its source knows it without loading the pictures (MNIST's, say)."""
    shape = source(cfg.dataset).known_shape(cfg.resolution, cfg.channels)
    if shape is None:
        raise UsageError(f"the shape of {cfg.dataset}'s pictures is known once they are loaded: pass it")
    return shape


def saved_shape(saved: dict[str, Any]) -> Shape:
    """The data's shape a checkpoint was trained on (one written before shapes were recorded: what its dataset's
    source knows at the resolution and channels of then)."""
    if "data" in saved:
        return Shape.from_dict(saved["data"]["shape"])
    cfg = saved["config"]
    res, channels = cfg.get("resolution", TrainConfig.resolution), cfg.get("channels", TrainConfig.channels)
    shape = source(cfg["dataset"]).known_shape(res, channels)
    if shape is None:
        raise UsageError(
            f"the checkpoint records no shape of its data ({cfg['dataset']}): the dcgan that wrote it "
            f"is older than one that could train on it; train a new run"
        )
    return shape
