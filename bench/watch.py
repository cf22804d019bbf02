#!/usr/bin/env python3
"""What watching a run costs: an in-training evaluation by part (evaluator features were most of it), TensorBoard's
share of training time (runs with it on and off, alternated), and `animate` of 100 grids.

    python bench/watch.py CHECKPOINT [--tb-steps 300] [--pairs 5] [--only-tensorboard] > bench/results/watch.txt

CHECKPOINT: any checkpoint of a default (dcgan, unconditional) run, e.g. checkpoints/ckpt_0005000.pt.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from digitgan.quality.evaluator import Evaluator  # noqa: E402
from digitgan.quality.judge import Judge  # noqa: E402
from digitgan.quality.metrics import fid, kid, precision_recall_density_coverage  # noqa: E402
from digitgan.training.records import animate, read_rows  # noqa: E402
from digitgan.core.pictures import save_grid  # noqa: E402
from digitgan import load  # noqa: E402


def timed(fn, repeats: int = 3) -> float:
    """Median seconds of fn() over repeats."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def plain_embed(model: Evaluator, images: torch.Tensor) -> torch.Tensor:
    """The evaluator as it was before: BatchNorm unfolded, NCHW, 1,000 images at a time."""
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        return torch.cat([model.body(c) for c in images.split(1000)])


def profile_evaluation(checkpoint: str) -> None:
    judge = Judge("mnist", str(ROOT / "data"))
    G = load(checkpoint, device="cpu")
    print(f"## one evaluation by part (median of 3, seconds), checkpoint step {G.step}")
    print(f"{'samples':>8} {'draw':>6} {'features':>9} {'(before)':>9} {'FID':>6} {'KID':>6} {'PRDC':>6} {'total':>6}")
    for n in (10_000, 5_000, 2_000):
        images = G.sample(n)
        feats, _ = judge.model.embed(images)
        judge.kid_terms.clear()
        kid(judge.test_feats, feats, real_terms=judge.kid_terms)  # the real side, once per run: not timed below
        parts = [timed(lambda: G.sample(n)), timed(lambda: judge.model.embed(images)),
                 timed(lambda: plain_embed(judge.model, images)),
                 timed(lambda: fid(judge.test_feats, feats)),
                 timed(lambda: kid(judge.test_feats, feats, real_terms=judge.kid_terms)),
                 timed(lambda: precision_recall_density_coverage(judge.test_feats, feats, radii=judge.radii))]
        total = timed(lambda: judge.score_generator(G, n))
        print(f"{n:>8} " + " ".join(f"{p:>{w}.2f}" for p, w in zip(parts, (6, 9, 9, 6, 6, 6))) + f" {total:>6.2f}")
    print("(before): the evaluator's features as computed before this change, for comparison; total: "
          "Judge.score_generator, everything an in-training evaluation does\n")


def tensorboard_share(steps: int, pairs: int) -> None:
    print(f"## TensorBoard: {pairs} pairs of {steps}-step default runs (--eval-every 0), off then on; training "
          f"seconds from each run's metrics.csv (process start-up left out)")
    ratios = []
    for i in range(pairs):
        seconds = {}
        for tb in ("off", "on"):
            with tempfile.TemporaryDirectory() as d:
                done = subprocess.run([sys.executable, str(ROOT / "dcgan.py"), "train", "--steps", str(steps),
                                       "--eval-every", "0", "--tensorboard", tb, "--checkpoint-dir", f"{d}/ck",
                                       "--sample-dir", f"{d}/s", "--cache-dir", str(ROOT / "data")],
                                      capture_output=True, text=True)
                assert done.returncode == 0, done.stderr
                seconds[tb] = read_rows(Path(d) / "ck" / "metrics.csv")[-1]["seconds"]
                inside = [line for line in done.stderr.splitlines() if line.startswith("records:")]
        ratios.append(seconds["on"] / seconds["off"])
        print(f"pair {i}: off {seconds['off']:.1f} s, on {seconds['on']:.1f} s ({100 * (ratios[-1] - 1):+.1f} %); "
              f"{inside[0] if inside else ''}")
    print(f"median of the pairs: {100 * (statistics.median(ratios) - 1):+.1f} % (the spread of the pairs is this "
          f"machine's noise; the in-process figure is what the training thread spends in TensorBoard calls)\n")


def animate_speed(checkpoint: str) -> None:
    G = load(checkpoint, device="cpu")
    with tempfile.TemporaryDirectory() as d:
        for i in range(100):
            save_grid(G.sample(64, seed=i), Path(d) / f"step_{(i + 1) * 50:07d}.png", nrow=8)
        seconds = timed(lambda: animate(d, Path(d) / "progress.gif", 4.0))
        size = (Path(d) / "progress.gif").stat().st_size
    print(f"## animate: 100 grids (8x8) -> GIF in {seconds:.2f} s (median of 3), {size / 1e6:.1f} MB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--tb-steps", type=int, default=300)
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--only-tensorboard", action="store_true")
    args = p.parse_args()
    print(f"# bench/watch.py {args.checkpoint} --tb-steps {args.tb_steps} --pairs {args.pairs}; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads\n")
    if not args.only_tensorboard:
        profile_evaluation(args.checkpoint)
        animate_speed(args.checkpoint)
        print()
    tensorboard_share(args.tb_steps, args.pairs)


if __name__ == "__main__":
    main()
