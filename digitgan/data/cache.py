"""The mapped cache: the format pictures are frozen into (freeze.py), and how it is written, checked and read.
It is three files beside each other:

    STEM.pixels   the (N, C, R, R) uint8 pixels, uncompressed: the training images first, then the hold-out
    STEM.labels   the (N,) int64 labels in the same order
    STEM.json     the record: shape, classes, what was converted and skipped, the SHA-256 of the labels and of every
                  64 MB of the pixels, the splits' fingerprints

Reading checks both files against the record when they are read first after they were written or changed in any way
(their inode, size, modification and change times are noted in STEM.checked when found intact; the pixels' pieces
are hashed on every core: the cost is measured in docs/data.md), and maps the pixels copy-on-write, so a split is a view
of the file: no copy in memory, and processes that map one file share its pages. A damaged or missing file is
noticed (read_frozen gives None, after a line saying so) and the pictures are frozen again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.devices import cores
from ..core.files import atomic_write, fsync_dir, temporary
from ..errors import WriteError
from .dataset import fingerprint_tail

CACHE_FORMAT = 2  # the mapped cache (1: one compressed .npz, converted on first read: freeze.py)
CHUNK = 64 * 2**20  # bytes hashed or copied at a time


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
    with temporary(cache, "pixels") as pixels:
        with open(pixels, "wb") as f:
            for block in blocks:
                if block.shape[1:] != picture_shape or block.dtype != np.uint8:
                    raise ValueError(f"a block of {block.dtype} {block.shape[1:]} in a cache of uint8 {picture_shape}")
                f.write(np.ascontiguousarray(block).data.cast("B"))
        finish_cache(cache, pixels, labels, classes, picture_shape, held_out, converted, skipped)


def finish_cache(
    cache: Path,
    pixels: Path,
    labels: np.ndarray,
    classes: tuple[str, ...],
    picture_shape: tuple[int, int, int],
    held_out: int,
    converted: Counter | None,
    skipped: Counter | None,
) -> None:
    """The cache made from a file of all its pixels in the cache's order (a temporary() beside it): hashed (on every
    core), moved into place with the labels beside it, its record written last. This process need not check it
    again."""
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
    with temporary(cache, "labels") as labels_file:
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

    with ThreadPoolExecutor(cores()) as pool:
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
