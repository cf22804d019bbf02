#!/usr/bin/env python3
"""Training at 32, 64, 128 and 256 pixels on this machine: the time of an iteration (each as a ratio to 64 px, all
timed in one run, in interleaved rounds) and the peak memory of a training process at the default batch.

The pictures are one folder at every side: 600 of the emoji as Debian's font draws them (136x136 PNG files, from
the 128-pixel cache), so that each resolution trains on the same real pictures, scaled; the run is the default
for a folder (the dcgan preset, ADA, batch 64), set up as `dcgan.py train` sets it up. Memory: `dcgan.py train
--steps 20` in a process of its own (its last step's evaluation included), read from /proc every 0.1 s.

    python bench/resolutions.py [--rounds 7]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from PIL import Image

from bigfolder import dcgan, watched  # bench/, beside this file
from digitgan.config import cache_home
from digitgan.data.emoji import EMOJI
from digitgan.training.distributed import World
from digitgan.training.lock import RunLock
from digitgan.training.start import start
from digitgan.training.steps import Meter, update

SIDES = (32, 64, 128, 256)


def folder(out: Path, n: int = 600) -> Path:
    frozen = EMOJI.frozen(128, 0, cache_home(), say=lambda line: None)
    pics = out / "pics"
    pics.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.asarray(frozen.pixels[i]).transpose(1, 2, 0)).save(pics / f"{i:04d}.png")
    return pics


def iteration(pics: Path, side: int, work: Path):
    lock = RunLock()
    try:
        run = start({"dataset": str(pics), "resolution": side, "device": "cpu", "tensorboard": "off",
                     "checkpoint_dir": str(work / f"ck{side}"), "sample_dir": str(work / f"s{side}")},
                    False, False, World(), lock)
    finally:
        lock.release()
    meter = Meter(run.device)
    return lambda: meter.add(update(run.state, run.G_step, run.D_step, run.batches, run.objective))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        pics = folder(work)
        steps = {side: iteration(pics, side, work) for side in SIDES}
        for step in steps.values():  # warm-up: the optimizers' moments, a first lazy R1
            for _ in range(3):
                step()
        times: dict[int, list[float]] = {side: [] for side in SIDES}
        for _ in range(args.rounds):
            for side, step in steps.items():
                t = time.perf_counter()
                step()
                times[side].append(time.perf_counter() - t)
        del steps
        print(f"# python bench/resolutions.py --rounds {args.rounds}; {torch.get_num_threads()} threads; torch "
              f"{torch.__version__}; a folder of 600 emoji PNGs, the default run for a folder (ADA), batch 64")
        base = statistics.median(times[64])
        for side in SIDES:
            med = statistics.median(times[side])
            print(f"{side:>4} px: {1000 * med:8.1f} ms an iteration (median of {args.rounds}), "
                  f"{med / base:5.2f}x the 64-pixel iteration")
        for side in SIDES:
            peak = watched(dcgan("train", "--dataset", str(pics), "--resolution", str(side), "--steps", "20",
                                 "--tensorboard", "off", "--checkpoint-dir", str(work / f"m{side}"),
                                 "--sample-dir", str(work / f"ms{side}")))
            print(f"{side:>4} px: peak resident {peak['peak_rss_mb']:7.0f} MB (anonymous {peak['peak_anon_mb']:7.0f} "
                  f"MB) for `dcgan.py train --steps 20` at the default batch, its last evaluation included")


if __name__ == "__main__":
    main()
