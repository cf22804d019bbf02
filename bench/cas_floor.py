#!/usr/bin/env python3
"""How many steps the CAS classifier needs before it learns anything: its accuracy on MNIST's test set when fit
(digitgan.quality.evaluator.fit_classifier, one thread) on a seeded pick of n real training digits for about each
number of steps (whole epochs of n // 128 batches). Behind the floor of evaluator.LEAST_STEPS (docs/quality.md).

    python bench/cas_floor.py 1000,1500,3000 20,50,100,200 | tee bench/results/cas-floor.txt
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from digitgan.data.sources import load_dataset
from digitgan.quality.evaluator import accuracy, fit_classifier


def main(sizes: list[int], steps: list[int], cache: str = "data") -> None:
    torch.set_num_threads(1)
    train, test = (load_dataset("mnist", split, cache_dir=cache) for split in ("train", "test"))
    for n in sizes:
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(1234))[:n]
        for want in steps:
            epochs = max(1, math.ceil(want * 128 / n))
            start = time.perf_counter()
            model = fit_classifier(train.pixels[pick], train.labels[pick], epochs, classes=10)
            took = time.perf_counter() - start
            print(
                f"n={n} epochs={epochs} steps={epochs * (n // 128)} accuracy={accuracy(model, test):.4f} "
                f"fit={took:.1f}s",
                flush=True,
            )


if __name__ == "__main__":
    main([int(n) for n in sys.argv[1].split(",")], [int(s) for s in sys.argv[2].split(",")])
