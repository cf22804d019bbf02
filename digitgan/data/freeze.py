"""Pictures frozen once into a cache at the run's resolution, which training maps rather than reads: what the emoji and
a folder of image files share (folder.py, emoji.py), and the seeded hold-out that stands in for the test set they
do not have.

Freezing reads every picture (pictures.py) in a pool of worker processes, in file order whatever their number, writes
each where it belongs in the cache, and skips what cannot be read, counted by reason. The cache is three files beside
each other:

    STEM.pixels   the (N, C, R, R) uint8 pixels, uncompressed: the training images first, then the hold-out
    STEM.labels   the (N,) int64 labels in the same order
    STEM.json     the record: shape, classes, what was converted and skipped, the SHA-256 of the labels and of every
                  64 MB of the pixels, the splits' fingerprints

Reading checks both files against the record when they are read first after they were written or changed in any way
(their inode, size, modification and change times are noted in STEM.checked when found intact; the pixels' pieces
are hashed on every core: the cost is measured in docs/data.md), and maps the pixels copy-on-write, so a split is a view
of the file: no copy in memory, and processes that map one file share its pages. A damaged or missing file is
noticed and the pictures frozen again, after a line saying so.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing
import os
import sys
import types
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..core.files import atomic_write, fsync_dir, read_cache
from ..errors import UsageError, WriteError
from .dataset import Dataset, fingerprint, fingerprint_tail
from .pictures import luma, read_for_freezing
from .shape import Shape
from .source import Request, Source

FREEZE_VERSION = 2  # part of every cache key: bump when freezing changes the pixels (2: JPEGs decoded scaled)
CACHE_FORMAT = 2  # the mapped cache (1: one compressed .npz, converted on first read)
HOLDOUT_SHARE, HOLDOUT_MAX, HOLDOUT_SEED = 0.1, 10_000, 2024  # the held-out images quality is measured on
CHUNK = 64 * 2**20  # bytes hashed or copied at a time
POOL_FROM = 500  # pictures from which on freezing takes a pool of processes


@dataclass
class Frozen:
    """A set of images frozen at one resolution: (N, C, R, R) uint8 pixels (mapped from the cache: the training
    images, then the `held_out` ones), (N,) labels, the class names, what was done on the way (reason -> count), and
    the fingerprints of the two splits."""

    pixels: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    converted: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    held_out: int = 0
    fingerprints: dict[str, str] = field(default_factory=dict)  # "train", "test"

    def summary(self, name: str) -> str:
        counts = Counter(self.labels.tolist())
        return (
            f"{name}: {len(self.labels)} images used"
            + (f" ({reasons(self.converted)})" if self.converted else "")
            + f", {sum(self.skipped.values())} skipped"
            + (f" ({reasons(self.skipped)})" if self.skipped else "")
            + (
                f"; {len(self.classes)} classes: " + ", ".join(f"{c} {counts[i]}" for i, c in enumerate(self.classes))
                if self.classes
                else "; no classes (unlabelled)"
            )
        )

    def split(self, split: str) -> slice:
        """The rows of a split ("train" or "test": the hold-out)."""
        n_train = len(self.labels) - self.held_out
        return slice(n_train, None) if split == "test" else slice(0, n_train)


def reasons(counts: Counter) -> str:
    """ "3 palette, 1 CMYK": what happened to how many, most first."""
    return ", ".join(f"{n} {why}" for why, n in sorted(counts.items(), key=lambda kv: -kv[1]))


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
    if workers:
        return workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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
    first = _temporary(cache, "placed")
    depth = 1 if channels == 1 else 3
    size = depth * resolution * resolution
    train, held = holdout_split(count)
    order = np.concatenate([train, held])
    slot = np.empty(count, np.int64)  # where each picture belongs if all of them are used
    slot[order] = np.arange(count)
    used, labels = np.zeros(count, bool), np.zeros(count, np.int64)  # which pictures were used, and their labels
    converted, all_grey = Counter[str](), True
    try:
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
            _finish_cache(cache, first, file_labels[order], classes, shape, len(held), converted, skipped)
        else:
            os.truncate(first, count * size)  # the slots of pictures skipped at the end were never written
            placed = np.memmap(first, np.uint8, "r", shape=(count, *shape))
            _write_split(cache, placed, slot[used], file_labels, classes, converted, skipped, grey)
    except OSError as e:
        raise WriteError(cache, e) from None
    finally:
        with contextlib.suppress(OSError):
            first.unlink()
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


def write_cache_files(
    cache: Path,
    blocks: Iterable[np.ndarray],
    labels: np.ndarray,
    classes: tuple[str, ...],
    picture_shape: tuple[int, int, int],
    held_out: int,
    converted: Counter | None = None,
    skipped: Counter | None = None,
) -> None:
    """A cache's three files from (rows, C, R, R) uint8 blocks of pixels in the cache's order (the training images,
    then the last `held_out`), streamed to disk: what is in memory is one block at a time."""
    pixels = _temporary(cache, "pixels")
    try:
        with open(pixels, "wb") as f:
            for block in blocks:
                if block.shape[1:] != picture_shape or block.dtype != np.uint8:
                    raise ValueError(f"a block of {block.dtype} {block.shape[1:]} in a cache of uint8 {picture_shape}")
                f.write(np.ascontiguousarray(block).data.cast("B"))
        _finish_cache(cache, pixels, labels, classes, picture_shape, held_out, converted, skipped)
    finally:
        with contextlib.suppress(OSError):
            pixels.unlink()


def _finish_cache(
    cache: Path,
    pixels: Path,
    labels: np.ndarray,
    classes: tuple[str, ...],
    picture_shape: tuple[int, int, int],
    held_out: int,
    converted: Counter | None,
    skipped: Counter | None,
) -> None:
    """The cache made from a file of all its pixels in the cache's order: hashed (on every core), moved into place
    with the labels beside it, its record written last. This process need not check it again."""
    n, size = len(labels), int(np.prod(picture_shape))
    if pixels.stat().st_size != n * size:
        raise ValueError(f"{pixels.stat().st_size} bytes of pixels for {n} pictures of {picture_shape}")
    labels = np.ascontiguousarray(labels, np.int64)
    cut = n - held_out
    splits = [(0, cut * size), (cut * size, n * size)]
    tails = [fingerprint_tail(labels[part], classes) for part in (slice(0, cut), slice(cut, n))]
    fd = os.open(pixels, os.O_RDWR)
    try:
        os.fsync(fd)
        train, test = _digests(fd, splits, tails)
        digests = _chunk_digests(fd, CHUNK)
    finally:
        os.close(fd)
    labels_file = _temporary(cache, "labels")
    atomic_write(labels_file, lambda f: f.write(labels.tobytes()))
    os.replace(pixels, cache.with_suffix(".pixels"))
    os.replace(labels_file, cache.with_suffix(".labels"))
    fsync_dir(cache.parent)
    record = {
        "format": CACHE_FORMAT,
        "shape": [n, *picture_shape],
        "held_out": held_out,
        "classes": list(classes),
        "converted": dict(converted or {}),
        "skipped": dict(skipped or {}),
        "chunk_bytes": CHUNK,
        "pixels_sha256": digests,
        "labels_sha256": hashlib.sha256(labels.data).hexdigest(),
        "fingerprints": {"train": train[:16], "test": test[:16]},
    }
    atomic_write(cache.with_suffix(".json"), lambda f: f.write(json.dumps(record, indent=1).encode() + b"\n"))
    _remember(cache, _identity(record, cache.with_suffix(".pixels"), cache.with_suffix(".labels")))


def _temporary(cache: Path, part: str) -> Path:
    return cache.with_name(f".{cache.name}.{part}.tmp{os.getpid()}")


def _digests(fd: int, ranges: list[tuple[int, int]], tails: list[bytes] | None = None) -> list[str]:
    """The SHA-256 of each (start, end) byte range of a file (followed by its tail, where given), hashed by one
    thread a core: hashlib and pread let go of the GIL, so the threads run at once."""

    def digest(job: tuple[tuple[int, int], bytes]) -> str:
        (start, end), tail = job
        h, at = hashlib.sha256(), start
        while at < end and (data := os.pread(fd, min(CHUNK, end - at), at)):
            h.update(data)
            at += len(data)
        h.update(tail)
        return h.hexdigest()

    with ThreadPoolExecutor(workers_for(0)) as pool:
        return list(pool.map(digest, zip(ranges, tails or [b""] * len(ranges))))


def _chunk_digests(fd: int, chunk: int) -> list[str]:
    """The SHA-256 of every `chunk` bytes of a file."""
    size = os.fstat(fd).st_size
    return _digests(fd, [(start, min(start + chunk, size)) for start in range(0, size, chunk)])


_VERIFIED: set[str] = set()  # caches this process has checked or written, by _identity


def _identity(record: dict[str, Any], pixels_file: Path, labels_file: Path) -> str:
    """A cache as it was checked: its record, and its files' inode, size, modification and change times (a file
    replaced, or written to in any way, has another: its change time is the kernel's, set on every write)."""
    stats = [(str(p), *(getattr(p.stat(), k) for k in ("st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")))
             for p in (pixels_file, labels_file)]  # fmt: skip
    return hashlib.sha256(json.dumps([record, stats], sort_keys=True).encode()).hexdigest()


def _remember(cache: Path, identity: str) -> None:
    """Note that the cache is intact as it stands: in this process, and in STEM.checked for the next ones (a cache
    directory that cannot be written to only costs them the check)."""
    _VERIFIED.add(identity)
    with contextlib.suppress(WriteError):
        atomic_write(cache.with_suffix(".checked"), lambda f: f.write(identity.encode()))


def _intact(cache: Path, record: dict[str, Any], shape: tuple[int, ...]) -> bool:
    """Whether both files match the record: hashed when this cache is read first after it was written or changed
    (STEM.checked holds the identity it was last found intact with), else known."""
    pixels_file, labels_file = cache.with_suffix(".pixels"), cache.with_suffix(".labels")
    identity = _identity(record, pixels_file, labels_file)
    if identity in _VERIFIED:
        return True
    with contextlib.suppress(OSError):
        if cache.with_suffix(".checked").read_text() == identity:
            _VERIFIED.add(identity)
            return True
    if pixels_file.stat().st_size != int(np.prod(shape)) or labels_file.stat().st_size != 8 * shape[0]:
        return False
    digests = record["pixels_sha256"]
    # the first mapped caches recorded one digest of the whole file
    chunk = int(record["chunk_bytes"]) if isinstance(digests, list) else max(1, pixels_file.stat().st_size)
    fd = os.open(pixels_file, os.O_RDONLY)
    try:
        intact = _chunk_digests(fd, chunk) == (digests if isinstance(digests, list) else [digests])
    finally:
        os.close(fd)
    intact = intact and hashlib.sha256(labels_file.read_bytes()).hexdigest() == record["labels_sha256"]
    if intact:
        _remember(cache, identity)
    return intact


def read_frozen(cache: Path, again: str = "freezing the images again") -> Frozen | None:
    """The mapped cache at `cache`, if its record is there and both files match the SHA-256 it holds; else None,
    after a line saying what was wrong (a record without its files, or files that changed since: `again`)."""
    try:
        record = json.loads(cache.with_suffix(".json").read_bytes())
    except (OSError, ValueError):
        return None
    shape = tuple(record.get("shape", ()))
    if record.get("format") != CACHE_FORMAT or len(shape) != 4:
        print(f"note: {cache.with_suffix('.json')} is no cache this dcgan reads: {again}", file=sys.stderr)
        return None
    pixels_file, labels_file = cache.with_suffix(".pixels"), cache.with_suffix(".labels")
    try:
        intact = _intact(cache, record, shape)
    except (OSError, KeyError, TypeError, ValueError):
        intact = False
    if not intact:
        print(
            f"warning: {pixels_file.name} or {labels_file.name} in {cache.parent}/ does not match the SHA-256 "
            f"recorded when it was written (it changed on disk, or is gone): {again}",
            file=sys.stderr,
        )
        return None
    # copy-on-write: torch takes the array as writable, and nothing ever writes to it
    pixels = np.memmap(pixels_file, np.uint8, "c", shape=shape)
    labels = np.fromfile(labels_file, np.int64)
    return Frozen(
        pixels,
        labels,
        tuple(record["classes"]),
        Counter(record["converted"]),
        Counter(record["skipped"]),
        int(record["held_out"]),
        dict(record["fingerprints"]),
    )


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


__all__ = ["Freezing", "Frozen", "FrozenSource", "fingerprint", "holdout_split", "read_frozen"]
