#!/usr/bin/env python3
"""Memorisation check: are a run's samples closer to its training images than new real images are?

For each of --num generated images, the distance (in the run's feature space: ImageNet features for the emoji
and folders) to its nearest training image, the images the run trained on (its --train-images pick); and the
same for every held-out real image, which no run ever trains on. A generator that copies its training set puts
its samples closer than the hold-out sits: the lower quantiles of the first distribution fall below the second's.
Prints both distributions' quantiles and the share of samples nearer than the hold-out's 1st and 5th percentile
(about 1 % and 5 % when nothing is copied), and writes OUT.png: the samples nearest to the training set, each
above its nearest training image.

    python bench/memorisation.py bench/out/ttq-emoji1k/run --out bench/results/memorisation-emoji1k

--train-images checks against another pick than the run's own: a fine-tuned run (--init) against the pictures
its start trained on (-1000 for a start trained on all but the pick of 1,000), or 0 for every training picture.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import digitgan  # noqa: E402
from digitgan.data.sources import load_dataset  # noqa: E402
from digitgan.data.sources import source  # noqa: E402
from digitgan.quality.features import feature_space  # noqa: E402
from digitgan.core.pictures import captioned, grid  # noqa: E402

QUANTILES = (0.01, 0.05, 0.25, 0.5)


def nearest(queries: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's Euclidean distance to its nearest key, and that key's index."""
    out = [torch.cdist(chunk, keys).min(1) for chunk in queries.split(1000)]
    return torch.cat([d for d, _ in out]), torch.cat([i for _, i in out])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run directory (its newest checkpoint is checked)")
    p.add_argument("--num", type=int, default=1000, help="generated images")
    p.add_argument("--show", type=int, default=12, help="closest samples in the picture")
    p.add_argument("--train-images", type=int, help="the training pick to compare with (default: the run's own)")
    p.add_argument("--out", required=True, help="OUT.json and OUT.png are written")
    args = p.parse_args()
    G = digitgan.load(args.run, device="cpu")
    cfg = G.config
    load = lambda split: load_dataset(cfg.dataset, split, cfg.data_dir, cfg.cache_dir, cfg.resolution, cfg.channels)
    pick = cfg.train_images if args.train_images is None else args.train_images
    train, held = load("train").subset(pick), load("test")
    space = feature_space(cfg.features, source(cfg.dataset), train.shape, cfg.cache_dir, "cpu")
    fake = G.sample(args.num, seed=1)
    embed = lambda images: space.embed(images)[0]
    f_train, f_held, f_fake = embed(train.images), embed(held.images), embed(fake)
    d_held, _ = nearest(f_held, f_train)
    d_fake, which = nearest(f_fake, f_train)
    q_held = {q: float(d_held.quantile(q)) for q in QUANTILES}
    q_fake = {q: float(d_fake.quantile(q)) for q in QUANTILES}
    result = {"run": args.run, "step": G.step, "features": space.name, "train_images": len(train),
              "held_out": len(held), "generated": args.num,
              "held_out_quantiles": {str(q): v for q, v in q_held.items()},
              "generated_quantiles": {str(q): v for q, v in q_fake.items()},
              "generated_nearer_than_held_out_p1": float((d_fake < q_held[0.01]).double().mean()),
              "generated_nearer_than_held_out_p5": float((d_fake < q_held[0.05]).double().mean()),
              "held_out_min": float(d_held.min()), "generated_min": float(d_fake.min())}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"{cfg.dataset}, {len(train)} training images, {len(held)} held out, {args.num} samples of step {G.step}, "
          f"in {space.name}: distance to the nearest training image")
    print(f"{'quantile':<10}{'hold-out':>10}{'samples':>10}")
    for q in QUANTILES:
        print(f"{q:<10}{q_held[q]:10.2f}{q_fake[q]:10.2f}")
    print(f"samples nearer than the hold-out's 1st percentile: {result['generated_nearer_than_held_out_p1']:.1%}, "
          f"than its 5th: {result['generated_nearer_than_held_out_p5']:.1%} (no copying: about 1 % and 5 %)")
    order = d_fake.argsort()[:args.show]
    pairs = torch.cat([fake[order], train.images[which[order]]])  # row 1: samples, row 2: their nearest
    picture = captioned(grid(pairs, nrow=len(order)), f"top: the {len(order)} samples nearest the training set; "
                        f"below: that nearest training image (step {G.step})")
    from PIL import Image
    Image.fromarray(np.ascontiguousarray(picture)).save(out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
