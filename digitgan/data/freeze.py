"""Pictures frozen once into the mapped cache (cache.py) at the run's resolution, which training maps rather than
reads: what the emoji and a folder of image files share (folder.py, emoji.py), and the seeded hold-out that stands
in for the test set they do not have.

Freezing reads every picture (pictures.py) in a pool of worker processes, in file order whatever their number, writes
each where it belongs in the cache, and skips what cannot be read, counted by reason. A cache in the format before
the mapped one (one .npz, in file order) is frozen again from its pixels, once.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import sys
import types
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..core.devices import cores
from ..core.files import read_cache, sweep, temporary
from ..errors import UsageError, WriteError
from .cache import CHUNK, Frozen, finish_cache, read_frozen, reasons, write_cache_files
from .dataset import Dataset
from .pictures import luma, read_for_freezing
from .shape import Shape
from .source import Request, Source

FREEZE_VERSION = 2  # part of every cache key: bump when freezing changes the pixels (2: JPEGs decoded scaled)
HOLDOUT_SHARE, HOLDOUT_MAX, HOLDOUT_SEED = 0.1, 10_000, 2024  # the held-out images quality is measured on
POOL_FROM = 500  # pictures from which on freezing takes a pool of processes


def holdout_size(n: int) -> int:
    """How many of n images are held out: HOLDOUT_SHARE, at least 2 (for KID), at most HOLDOUT_MAX."""
    return max(2, min(round(n * HOLDOUT_SHARE), HOLDOUT_MAX))


def holdout_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) indices, each in file order, of a source of n images with no test set of its own:
    holdout_size(n) of them drawn with a fixed seed, so a folder splits the
    same way in every run and the quality figures' real images are never trained on."""
    k = holdout_size(n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_SEED)).numpy()
    return np.sort(order[k:]), np.sort(order[:k])


def workers_for(workers: int) -> int:
    """Processes a freeze uses: `workers`, or for 0 one per core this process may run on."""
    return workers or cores()


# ---------------------------------------------------------------- freezing


def _pool(workers: int) -> Any:
    """A pool of spawned processes that import pictures.py alone: not torch, and not the script that called us.
    A spawned process runs the parent's main script again before its work (as multiprocessing's own workers do),
    and a script without an `if __name__ == "__main__":` guard would freeze again in every worker, whose pool may
    not start, forever; so the workers start while __main__ is an empty module."""
    script = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        return multiprocessing.get_context("spawn").Pool(workers)
    finally:
        sys.modules["__main__"] = script


def read_all(
    items: Iterable[tuple[bytes | str, int]], count: int, resolution: int, grey: bool, workers: int, desc: str
) -> Iterator[tuple[np.ndarray | str, bool, Counter, int]]:
    """(picture or why not, whether grey, what was converted, label) for every (file bytes or path, label) item, in
    the items' order, read by a pool of `workers` processes (one for small sets: a pool costs its start)."""
    labels: list[int] = []

    def sources() -> Iterator[bytes | str]:
        for data, label in items:
            labels.append(label)
            yield data

    read = partial(read_for_freezing, resolution=resolution, grey=grey)
    pool = _pool(workers) if count >= POOL_FROM and workers > 1 else None
    with pool or contextlib.nullcontext():
        results = pool.imap(read, sources(), chunksize=32) if pool else map(read, sources())
        bar = tqdm(total=count, desc=desc, unit="img", mininterval=0.5, leave=False, disable=count < POOL_FROM)
        with bar:
            for i, (picture, is_grey, converted) in enumerate(results):
                bar.update(1)
                yield picture, is_grey, converted, labels[i]


def freeze(
    items: Iterable[tuple[bytes | str, int]],
    count: int,
    resolution: int,
    channels: int,
    classes: tuple[str, ...],
    skipped: Counter,
    desc: str,
    cache: Path,
    workers: int = 0,
    check: Callable[[int, Counter], None] = lambda used, skipped: None,
) -> Frozen:
    """Read every (file bytes or path, label) item into the mapped cache at `cache` (STEM.pixels, .labels, .json):
    grey when asked for (channels 1) or when every picture is grey (channels 0), else RGB; the same files whatever
    the number of workers. check(pictures used, skipped) may refuse the result before anything is written.

    Each picture is written where it belongs if every picture can be used (the split of `count` pictures), so the
    usual freeze writes its pixels once; a skipped picture, or grey RGB pictures, rewrite them in split order."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    depth = 1 if channels == 1 else 3
    size = depth * resolution * resolution
    train, held = holdout_split(count)
    order = np.concatenate([train, held])
    slot = np.empty(count, np.int64)  # where each picture belongs if all of them are used
    slot[order] = np.arange(count)
    used, labels = np.zeros(count, bool), np.zeros(count, np.int64)  # which pictures were used, and their labels
    converted, all_grey = Counter[str](), True
    try:
        with temporary(cache, "placed") as first:
            with open(first, "wb") as f:
                for i, (picture, is_grey, done, label) in enumerate(
                    read_all(items, count, resolution, channels == 1, workers_for(workers), desc)
                ):
                    converted.update(done)
                    if isinstance(picture, str):
                        skipped[picture] += 1
                        continue
                    os.pwrite(f.fileno(), picture.data, int(slot[i]) * size)
                    used[i], labels[i] = True, label
                    all_grey &= is_grey
            n = int(used.sum())
            check(n, skipped)
            if not n:
                raise UsageError(f"{desc}: none of the {count} pictures could be read ({reasons(skipped)})")
            grey = channels == 0 and all_grey  # every picture grey: one channel, as Pillow's "L" has it
            file_labels = labels[used]
            shape = (depth, resolution, resolution)
            if n == count and not grey:  # in place already
                finish_cache(cache, first, file_labels[order], classes, shape, len(held), converted, skipped)
            else:
                os.truncate(first, count * size)  # the slots of pictures skipped at the end were never written
                placed = np.memmap(first, np.uint8, "r", shape=(count, *shape))
                _write_split(cache, placed, slot[used], file_labels, classes, converted, skipped, grey)
    except OSError as e:
        raise WriteError(cache, e) from None
    frozen = read_frozen(cache)
    assert frozen is not None  # just written
    return frozen


def _write_split(
    cache: Path,
    pixels: np.ndarray,
    rows: np.ndarray | None,
    labels: np.ndarray,
    classes: tuple[str, ...],
    converted: Counter,
    skipped: Counter,
    grey: bool,
) -> None:
    """The cache's three files from the pictures pixels[rows] (all of pixels for None), in file order, and their
    labels: the training images, then the held-out ones, each in file order; `grey` keeps one channel of RGB
    pictures that are grey."""
    train, held = holdout_split(len(labels))
    order = np.concatenate([train, held])
    where = order if rows is None else rows[order]
    shape = (1 if grey else pixels.shape[1], *pixels.shape[2:])
    rows_at_a_time = max(1, CHUNK // max(1, int(np.prod(shape))))

    def blocks() -> Iterator[np.ndarray]:
        for start in range(0, len(where), rows_at_a_time):
            block = pixels[where[start : start + rows_at_a_time]]
            yield luma(block) if grey else block

    write_cache_files(cache, blocks(), labels[order], classes, shape, len(held), converted, skipped)


def converted_from_npz(cache: Path) -> Frozen | None:
    """A cache in the format before the mapped one (STEM.npz, compressed), converted to it (and removed), with a
    line saying so; None when there is none, or it is damaged."""
    old = cache.with_suffix(".npz")
    if not old.exists():
        return None
    data = read_cache(old, "freezing the images again")
    if data is None:
        return None
    print(f"note: {old} is in the old cache format: converting it to the mapped one (once)", file=sys.stderr)
    arrays = np.load(io.BytesIO(data))
    record = json.loads(str(arrays["record"]))
    classes = tuple(record["classes"])
    pixels = np.asarray(arrays["pixels"])
    _write_split(
        cache, pixels, None, arrays["labels"], classes, Counter(record["converted"]), Counter(record["skipped"]), False
    )
    for stale in (old, old.with_name(old.name + ".sha256")):
        with contextlib.suppress(OSError):
            stale.unlink()
    return read_frozen(cache)


# ---------------------------------------------------------------- the sources that freeze


Pictures = tuple[Iterable[tuple[bytes | str, int]], int, tuple[str, ...]]  # (bytes or path, label)s, count, classes


@dataclass(frozen=True)
class Freezing:
    """Where a frozen source's pictures are cached (the files' stem), how to open them when they must be frozen
    (a context giving the (file bytes or path, label) of every picture, their count and the class names), and what
    the summary calls them; `check` refuses a result that cannot be trained on."""

    cache: Path
    pictures: Callable[[], contextlib.AbstractContextManager[Pictures]]
    about: str
    desc: str
    skipped: Counter = field(default_factory=Counter)  # what was passed over before reading
    check: Callable[[int, Counter], None] = lambda used, skipped: None  # may refuse what was read


class FrozenSource(Source):
    """A source whose pictures are frozen once and split into training images and a seeded hold-out."""

    augment = "ada"  # a few thousand pictures: D learns them by heart and the samples collapse (experiments.md)

    def freezing(self, resolution: int, channels: int, cache_dir: str) -> Freezing:
        raise NotImplementedError

    def frozen(
        self,
        resolution: int,
        channels: int,
        cache_dir: str,
        say: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
        workers: int = 0,
    ) -> Frozen:
        """All its pictures at the resolution, from the cache in cache_dir, or frozen into it by `workers`
        processes (0: one per core), saying what was used and skipped."""
        plan = self.freezing(resolution, channels, cache_dir)
        sweep(plan.cache.parent)  # what a freeze killed mid-way left, whether this one is cached or not
        frozen = read_frozen(plan.cache) or converted_from_npz(plan.cache)
        if frozen is None:
            with plan.pictures() as (items, count, classes):
                frozen = freeze(
                    items,
                    count,
                    resolution,
                    channels,
                    classes,
                    Counter(plan.skipped),
                    plan.desc,
                    plan.cache,
                    workers,
                    plan.check,
                )
            say(frozen.summary(f"{plan.about} at {resolution}x{resolution}"))
        return frozen

    def load(self, split: str, resolution: int, channels: int, cache_dir: str, data_dir: str = "") -> Dataset:
        frozen = self.frozen(resolution, channels, cache_dir)
        rows = frozen.split(split)  # a view of the mapped file
        return Dataset(
            torch.from_numpy(frozen.pixels[rows]),
            torch.from_numpy(frozen.labels[rows]),
            f"{self.name}-{split}",
            Shape(resolution, frozen.pixels.shape[1], frozen.classes),
            held_out=frozen.held_out,
            known_fingerprint=frozen.fingerprints["test" if split == "test" else "train"],
        )

    def sizes(self, asked: Request, say: Callable[[str], None]) -> tuple[int, int, tuple[str, ...]]:
        frozen = self.frozen(asked.resolution, asked.channels, asked.cache_dir, say, asked.workers)
        return len(frozen.labels), len(frozen.labels) - frozen.held_out, frozen.classes

    def prepare(self, asked: Request, say: Callable[[str], None]) -> None:
        self.frozen(asked.resolution, asked.channels, asked.cache_dir, lambda line: print(line, file=sys.stderr),
                    asked.workers)  # fmt: skip
        super().prepare(asked, say)


__all__ = ["Freezing", "FrozenSource", "Pictures", "holdout_split"]
