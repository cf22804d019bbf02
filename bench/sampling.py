#!/usr/bin/env python3
"""Sampling speed: seconds to generate N digits with the default preset's generator, as `dcgan.py sample` does.

The generator is a freshly initialised one in eval mode, prepared as digitgan.load prepares a trained one
(the speed does not depend on the weights), unless --checkpoint names a trained one. Median of --repeats.

    python bench/sampling.py                  # 10,000 samples
    python bench/sampling.py --checkpoint checkpoints/ckpt_0005000.pt
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from digitgan.config import resolve  # noqa: E402
from digitgan.nets.networks import build_models  # noqa: E402
from digitgan import load  # noqa: E402
from digitgan.nets.drawing import Generator, prepare_for_inference  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.checkpoint:
        G = load(args.checkpoint, device=args.device)
    else:
        cfg = resolve({})
        G = Generator(prepare_for_inference(build_models(cfg)[0], cfg, torch.device(args.device)), cfg, 0)
    times = []
    for i in range(args.repeats + 1):
        t = time.perf_counter()
        images = G.sample(args.num, seed=i)
        if i:  # the first call warms up
            times.append(time.perf_counter() - t)
    print(f"{args.num} samples ({tuple(images.shape[1:])}) from the {G.config.preset} preset (width {G.config.width}) on "
          f"{args.device}, {torch.get_num_threads()} threads: {statistics.median(times):.3f} s (median of "
          f"{args.repeats}; min {min(times):.3f}, max {max(times):.3f})")


if __name__ == "__main__":
    main()
