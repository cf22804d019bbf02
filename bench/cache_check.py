#!/usr/bin/env python3
"""What checking the caches costs: reading each cache in data/ with its SHA-256 check (files.read_cache) against
reading its bytes alone, and loading the MNIST training set as training does (MNIST.uint8); and setting up the
evaluator (metrics.Judge) from its cache, against computing the test set's neighbour radii there as it did before
they were cached. Medians of 7.

    python bench/cache_check.py [--cache-dir data]
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from digitgan.data.mnist import MNIST  # noqa: E402
from digitgan.core.files import read_cache  # noqa: E402
from digitgan.quality.judge import Judge  # noqa: E402
from digitgan.quality.metrics import real_radii  # noqa: E402


def median_seconds(fn, rounds: int = 7) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default="data")
    cache = Path(parser.parse_args().cache_dir)
    for path in sorted(p for p in cache.iterdir() if (cache / (p.name + ".sha256")).exists()):
        size = path.stat().st_size / 1e6
        read = median_seconds(path.read_bytes)
        digest = median_seconds(lambda: hashlib.sha256(path.read_bytes()).hexdigest())
        checked = median_seconds(lambda: read_cache(path, "(bench)"))
        print(f"{path.name}: {size:.1f} MB; read {1000 * read:.1f} ms, read + SHA-256 {1000 * digest:.1f} ms, "
              f"read_cache {1000 * checked:.1f} ms: the check costs {1000 * (checked - read):.1f} ms")
    load = median_seconds(lambda: MNIST.uint8("train", cache_dir=str(cache)))
    print(f"MNIST.uint8('train'), check included: {1000 * load:.1f} ms")
    judge = Judge("mnist", str(cache))
    setup = median_seconds(lambda: Judge("mnist", str(cache)))
    radii = median_seconds(lambda: real_radii(judge.test_feats))
    print(f"Judge('mnist') from its cache: {1000 * setup:.1f} ms; the radii it used to compute at every start: "
          f"{1000 * radii:.1f} ms more")


if __name__ == "__main__":
    main()
