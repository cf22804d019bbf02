#!/usr/bin/env python3
"""The ImageNet feature space's cost and what its figures can tell.

    python bench/imagenet_eval.py speed   # evaluate 10,000 generated 64x64 RGB images as `evaluate` does: the time,
                                          # its parts, and EfficientNet-Lite0's FLOP rate against the fp32 GEMM peak
    python bench/imagenet_eval.py sizes   # FID and KID of real against real images by sample size (the emoji and
                                          # MNIST, in ImageNet features): from what size on FID can be trusted

speed draws from an untrained default-preset generator of the emoji's shape (the cost does not depend on the
weights); each part is timed once after a warm-up (they take seconds to minutes).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from digitgan.config import resolve  # noqa: E402
from digitgan.data.sources import load_dataset  # noqa: E402
from digitgan.quality.features import CPU_BATCH, imagenet_space  # noqa: E402
from digitgan.nets.efficientnet import fast_copy, load_efficientnet, to_input  # noqa: E402
from digitgan.quality.judge import Judge  # noqa: E402
from digitgan.quality.metrics import fid as frechet, kid  # noqa: E402
from digitgan.nets.networks import build_models  # noqa: E402
from digitgan.nets.drawing import Generator, prepare_for_inference  # noqa: E402
from throughput import gemm, gemm_rate, time_interleaved  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def speed(cache_dir: str, num: int) -> None:
    judge = Judge("emoji", cache_dir, resolution=64)
    data = load_dataset("emoji", "train", cache_dir=cache_dir, resolution=64)
    cfg = resolve({"dataset": "emoji", "resolution": 64})
    torch.manual_seed(0)
    G, _ = build_models(cfg, data.shape)
    generator = Generator(prepare_for_inference(G, cfg, torch.device("cpu")), cfg, 0, data.shape)
    judge.score_generator(generator, 200)  # warm-up: every kernel once, the real side of KID for this size
    judge.kid_terms.clear()
    images, draw = timed(lambda: generator.draw(generator.noise(num, 0)))
    (feats, _), embed = timed(lambda: judge.space.embed(images))
    judge.kid_terms.clear()
    _, total = timed(lambda: judge.score_generator(generator, num))
    model, _ = load_efficientnet(cache_dir)
    fast = fast_copy(model)
    x = to_input(images[:CPU_BATCH]).contiguous(memory_format=torch.channels_last)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fast.features(x)
    per_image = counter.get_total_flops() / CPU_BATCH
    with torch.inference_mode():
        forward = lambda: fast.features(to_input(images[:CPU_BATCH]).contiguous(memory_format=torch.channels_last))
        seconds = time_interleaved({"net": forward, "gemm": gemm(torch.device("cpu"))}, rounds=15, warmup=2)
    rate, peak = per_image * CPU_BATCH / seconds["net"], gemm_rate(seconds["gemm"])
    print(f"evaluate {num} generated 64x64 RGB images (emoji shape), in-process, {torch.get_num_threads()} threads:")
    print(f"  Judge.score_generator, everything `evaluate --num {num}` does but loading: {total:.1f} s")
    print(f"  of which drawing them {draw:.1f} s; ImageNet features {embed:.1f} s ({1000 * embed / num:.2f} ms an image, "
          f"batches of {CPU_BATCH}); the metrics the rest")
    print(f"EfficientNet-Lite0 at 224x224: {per_image / 1e9:.3f} GFLOP an image (torch.utils.flop_counter); "
          f"{rate / 1e9:.1f} GFLOP/s in the forward pass alone (median of 15 rounds) = "
          f"{100 * rate / peak:.0f} % of the fp32 GEMM peak ({peak / 1e9:.1f} GFLOP/s, 2048x2048 torch.mm, same rounds)")


def sizes(cache_dir: str) -> None:
    space = imagenet_space(cache_dir, "cpu")
    print("FID and KID of real images against other real images, in ImageNet features (EfficientNet-Lite0); "
          "n images each side, disjoint, drawn with seed 0")
    print(f"{'data':<8}{'n':>7}{'FID':>10}{'KID':>11}{'KID std':>10}")
    for name, most in (("emoji", 1893), ("mnist", 5000)):
        data = load_dataset(name, "train", cache_dir=cache_dir, resolution=64 if name == "emoji" else 32)
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:2 * most]
        feats, _ = space.embed(data.images[pick])
        a, b = feats[:most], feats[most:2 * most]
        for n in (100, 250, 500, 1000, 2000, 5000):
            if n <= most:
                fid = frechet(a[:n], b[:n])
                k, k_std = kid(a[:n], b[:n])
                print(f"{name:<8}{n:>7}{fid:>10.3f}{k:>11.5f}{k_std:>10.5f}", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("speed", "sizes"))
    p.add_argument("--num", type=int, default=10_000)
    p.add_argument("--cache-dir", default="data")
    args = p.parse_args()
    speed(args.cache_dir, args.num) if args.what == "speed" else sizes(args.cache_dir)
