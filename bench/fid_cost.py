#!/usr/bin/env python3
"""What FID costs in 1,280-d ImageNet features on the emoji (379 held-out pictures, 9 classes): the overall FID
and the intra-class FID of one in-training evaluation of a conditional run (1,000 generated pictures), taken
with d x d matrix roots (frechet_distance of the two Gaussians) and from the smaller set's rows (metrics.fid,
what evaluations use), with the figures of both beside the same computation in float64.

    python bench/fid_cost.py [--repeats 3] > bench/results/fid-cost.txt

The generated side is random features of the right size and classes (the cost depends on the sizes alone).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from digitgan.quality.judge import Judge  # noqa: E402
from digitgan.quality.metrics import fid, frechet_distance, gaussian  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median seconds of fn() over repeats, its value)."""
    times, value = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--num", type=int, default=1000, help="generated pictures (an in-training evaluation's)")
    args = p.parse_args()
    judge = Judge("emoji", cache_dir=str(ROOT / "data"), resolution=64, channels=3)
    real, labels = judge.test_feats, judge.test_labels
    gen = torch.Generator().manual_seed(0)
    fake = real.mean(0) + real.std(0) * torch.randn(args.num, real.shape[1], generator=gen, dtype=real.dtype)
    fake_labels = torch.randint(int(labels.max()) + 1, (args.num,), generator=gen)
    classes = [c for c in range(int(labels.max()) + 1) if (labels == c).sum() >= 2]
    pairs = {"overall": [(real, fake)], "intra-class": [(real[labels == c], fake[fake_labels == c]) for c in classes]}
    print(f"{torch.__version__}, {torch.get_num_threads()} threads; emoji hold-out {tuple(real.shape)}, "
          f"{args.num} generated, {len(classes)} classes ({min(int((labels == c).sum()) for c in classes)} to "
          f"{max(int((labels == c).sum()) for c in classes)} real pictures each); median of {args.repeats}")
    for name, sets in pairs.items():
        mean = lambda f: sum(f(a, b) for a, b in sets) / len(sets)
        roots, by_roots = timed(lambda: mean(lambda a, b: frechet_distance(*gaussian(a), *gaussian(b))), args.repeats)
        rows, by_rows = timed(lambda: mean(fid), args.repeats)
        exact = mean(lambda a, b: frechet_distance(*gaussian(a.double()), *gaussian(b.double())))
        print(f"{name:<12} d x d roots {roots:8.3f} s ({by_roots:.4f}); from the rows {rows:7.3f} s ({by_rows:.4f}); "
              f"{roots / rows:6.1f}x as fast; float64 roots: {exact:.4f}")


if __name__ == "__main__":
    main()
