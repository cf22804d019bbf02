#!/usr/bin/env python3
"""How alike are the pushes a discriminator gives G's pictures? A look at why the projected D collapses here.

For a batch of generated pictures, the gradient of G's loss (minus D's logits, summed over a projected D's
heads) with respect to each picture, as in G's step (D in training mode, no augmentation). Printed per pairing:

  cosine   the mean cosine similarity of two pictures' gradients (0: unrelated pushes, 1: the same push)
  shared   the share of the gradients' energy in their batch mean, |mean g|^2 / mean |g|^2 (1/B for unrelated
           pushes, 1 when every picture is pushed the same way: a single pattern G can add to every output,
           whatever z, which is what a collapse to one picture looks like from G's side)

Fresh networks (G and both Ds from --seed, as a run would start them) and, for each --run, its generator against
its own trained D and against a fresh D of the other kind.

    python bench/gradient_alignment.py --dataset emoji --resolution 64 --run /tmp/runs/e64-default \
        --run /tmp/runs/e64-projected --out bench/results/gradient-alignment-emoji64.txt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from digitgan.api import Run
from digitgan.config import TrainConfig, resolve
from digitgan.data.shape import Shape
from digitgan.data.sources import load_dataset
from digitgan.nets.networks import build_models, call, load_weights, sample_noise
from digitgan.training import checkpoints

KINDS = ("dcgan", "projected")


def alignment(G: nn.Module, D: nn.Module, cfg: TrainConfig, batch: int, seed: int) -> tuple[float, float]:
    """(mean pairwise cosine, shared energy) of D's gradients to a batch of G's pictures."""
    z = sample_noise(cfg, batch, torch.Generator().manual_seed(seed), "cpu")
    with torch.no_grad():
        x = call(G.eval(), z, None)
    x.requires_grad_(True)
    logits = call(D.train(), x, None)
    (grad,) = torch.autograd.grad(-logits.sum(), x)
    g = grad.flatten(1)  # (B, C*R*R): one push per picture
    unit = g / g.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    off = (cos.sum() - cos.diagonal().sum()) / (batch * (batch - 1))
    shared = g.mean(0).square().sum() / g.square().sum(1).mean()
    return float(off), float(shared)


def shape_of(cfg: TrainConfig) -> Shape:
    return load_dataset(cfg.dataset, "train", cfg.data_dir, cfg.cache_dir, cfg.resolution, cfg.channels).shape


def fresh(cfg: TrainConfig, kind: str) -> tuple[nn.Module, nn.Module]:
    """G and a D of the kind as a run of cfg's data and seed starts them."""
    torch.manual_seed(cfg.seed)
    flags = {"dataset": cfg.dataset, "resolution": cfg.resolution, "seed": cfg.seed, "discriminator": kind}
    return build_models(resolve(flags), shape_of(cfg))


def trained(run: str) -> tuple[TrainConfig, nn.Module, nn.Module, int]:
    cfg = Run(Path(run)).config
    found = checkpoints.load_latest(run)
    assert found is not None, f"{run} holds no checkpoint"
    state = found[0]
    G, D = build_models(cfg, shape_of(cfg))
    load_weights(G, state["generator"])
    load_weights(D, state["discriminator"])
    return cfg, G, D, state["step"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="emoji")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--run", action="append", default=[], help="a trained run's directory (repeatable)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_grad_enabled(True)
    rows = []
    base = resolve({"dataset": args.dataset, "resolution": args.resolution, "seed": args.seed})
    for kind in KINDS:
        G, D = fresh(base, kind)
        rows.append(("fresh G (step 0)", f"fresh {kind} D", *alignment(G, D, base, args.batch, args.seed)))
    for run in args.run:
        cfg, G, D, step = trained(run)
        rows.append(
            (
                f"{Path(run).name} G (step {step})",
                f"its {cfg.discriminator} D",
                *alignment(G, D, cfg, args.batch, args.seed),
            )
        )
        other = KINDS[1 - KINDS.index(cfg.discriminator)]
        _, D2 = fresh(cfg, other)
        rows.append(
            (f"{Path(run).name} G (step {step})", f"fresh {other} D", *alignment(G, D2, cfg, args.batch, args.seed))
        )
    lines = [
        f"{args.dataset} at {args.resolution} px, a batch of {args.batch} generated pictures: D's gradients "
        f"to them (unrelated pushes: cosine 0, shared {1 / args.batch:.3f}; one push for all: 1, 1)",
        f"{'generator':<34}{'discriminator':<22}{'cosine':>8}{'shared':>8}",
    ]
    lines += [f"{g:<34}{d:<22}{c:8.3f}{s:8.3f}" for g, d, c, s in rows]
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
