#!/usr/bin/env python3
"""Grids side by side with a caption over each, scaled to one height, as one JPEG for the docs.

    python bench/side_by_side.py OUT.jpg "caption A" a.png "caption B" b.png [--height 520]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from digitgan.core.pictures import captioned  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("pairs", nargs="+", help="caption, picture, caption, picture, ...")
    p.add_argument("--height", type=int, default=520)
    args = p.parse_args()
    if len(args.pairs) % 2:
        sys.exit("give a caption before each picture")
    panels = []
    for caption, path in zip(args.pairs[::2], args.pairs[1::2]):
        image = Image.open(path).convert("RGB")
        image = image.resize((round(image.width * args.height / image.height), args.height), Image.Resampling.LANCZOS)
        panels.append(captioned(np.asarray(image), caption, height=20))
    gap = np.full((panels[0].shape[0], 8, 3), 255, np.uint8)
    row = np.concatenate([x for panel in panels for x in (panel, gap)][:-1], axis=1)
    Image.fromarray(row).save(args.out, quality=88)
    print(f"wrote {args.out}: {row.shape[1]}x{row.shape[0]}")


if __name__ == "__main__":
    main()
