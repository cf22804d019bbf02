#!/usr/bin/env python3
"""Freezing pictures: images per second the first time (decode, convert, scale, crop, cache) and the time of a
cached load, for the emoji from their package and for the same PNGs as a folder of files.

    python bench/freeze.py [--resolution 64]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from digitgan.data.emoji import EMOJI, EMOJI_DIR, emoji_tarball  # noqa: E402
from digitgan.data.folder import Folder  # noqa: E402


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--cache-dir", default="data", help="where the emoji package is")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    quiet = lambda s: None
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        folder = work / "emoji"
        with tarfile.open(emoji_tarball(args.cache_dir)) as tar:  # the PNGs as files, one folder
            members = [m for m in tar.getmembers() if m.name.startswith(EMOJI_DIR) and m.isfile()]
            folder.mkdir()
            for m in members:
                (folder / Path(m.name).name).write_bytes(tar.extractfile(m).read())
        for name, load in (("emoji package", lambda cache: EMOJI.frozen(args.resolution, 0, cache, say=quiet)),
                           ("folder of PNG files", lambda cache: Folder(str(folder)).frozen(args.resolution, 0, cache,
                                                                             say=quiet))):
            first, cached = [], []
            for i in range(args.repeats):
                cache = str(work / f"cache-{name[:5]}-{i}")
                Path(cache).mkdir()
                if name == "emoji package":  # the package itself stays where it is: only the frozen cache is new
                    (Path(cache) / Path(emoji_tarball(args.cache_dir)).name).symlink_to(
                        Path(emoji_tarball(args.cache_dir)).resolve())
                first.append(timed(lambda: load(cache)))
                cached.append(timed(lambda: load(cache)))
            n = len(members)
            print(f"{name:20s} {n} images at {args.resolution}x{args.resolution}: first freeze "
                  f"{statistics.median(first):.2f} s ({n / statistics.median(first):,.0f} images/s), cached load "
                  f"{statistics.median(cached):.3f} s (medians of {args.repeats})")
    memory(args.cache_dir)


def memory(cache_dir: str) -> None:
    """What the training set takes in memory: uint8 pixels, as kept, against the float32 they would be."""
    from digitgan.data.sources import load_dataset
    for name, res in (("mnist", 32), ("emoji", 64), ("emoji", 32)):
        data = load_dataset(name, cache_dir=cache_dir, resolution=res)
        kept = data.pixels.numel() * data.pixels.element_size()
        print(f"memory: {name} at {data.shape.describe()}, {len(data)} images: {kept / 1e6:.1f} MB as uint8 "
              f"(float32 would be {4 * kept / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
