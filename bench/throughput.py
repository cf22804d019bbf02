#!/usr/bin/env python3
"""Training speed of each preset on this machine: ms per iteration and real images per second.

One iteration = the preset's D steps then its G steps, through the same d_update/g_update the trainer calls,
on real MNIST batches. Median over --repeats timed iterations after --warmup untimed ones.

    python bench/throughput.py                       # both presets at their own batch sizes
    python bench/throughput.py --presets dcgan --repeats 20
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
from digitgan.data import BatchSampler, load_dataset  # noqa: E402
from digitgan.models import build_models, sample_noise  # noqa: E402
from digitgan.devices import pick_device  # noqa: E402
from digitgan.training import d_update, g_update  # noqa: E402


def time_preset(preset: str, repeats: int, warmup: int, device: torch.device, cache_dir: str) -> list[float]:
    cfg = resolve({"preset": preset})
    data = load_dataset("mnist", "train", cache_dir=cache_dir).to(device)
    torch.manual_seed(0)
    G, D = (m.to(device) for m in build_models(cfg))
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    sampler, gen = BatchSampler(len(data), cfg.batch_size, 0), torch.Generator(device).manual_seed(0)
    ones = torch.ones(cfg.batch_size, device=device)
    zeros = torch.zeros(cfg.batch_size, device=device)
    times = []
    for i in range(warmup + repeats):
        t = time.perf_counter()
        for _ in range(cfg.d_steps):
            d_update(G, D, opt_d, data.images[sampler.next()], sample_noise(cfg, cfg.batch_size, gen, device), ones, zeros)
        for _ in range(cfg.g_steps):
            loss = g_update(G, D, opt_g, sample_noise(cfg, cfg.batch_size, gen, device), ones)
        loss.item()  # wait for the device
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["dcgan", "seed"])
    p.add_argument("--repeats", type=int, default=None, help="timed iterations (default: 20 dcgan, 3 seed)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", default="data")
    args = p.parse_args()
    device = pick_device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for preset in args.presets:
        repeats = args.repeats or (3 if preset == "seed" else 20)
        times = time_preset(preset, repeats, args.warmup, device, args.cache_dir)
        cfg = resolve({"preset": preset})
        med = statistics.median(times)
        print(f"{preset:6s} batch {cfg.batch_size:4d}, {cfg.d_steps} D + {cfg.g_steps} G steps: "
              f"{1000 * med:9.1f} ms/iteration (median of {repeats}; min {1000 * min(times):.1f}, "
              f"max {1000 * max(times):.1f}), {cfg.batch_size / med:7.0f} real images/s, "
              f"{cfg.steps} steps ~ {cfg.steps * med / 60:.1f} min")


if __name__ == "__main__":
    main()
