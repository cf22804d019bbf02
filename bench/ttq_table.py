#!/usr/bin/env python3
"""One markdown table row per time_to_quality.csv: steps in the budget, the headline figure (FID, or KID on small
data) at a given step (--at) and at the end, precision, recall and the class figures where present.

    python bench/ttq_table.py bench/results/ttq24-u-*.csv --at 5000
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from time_to_quality import read_table  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv", nargs="+")
    p.add_argument("--at", type=int, default=0, help="also the figures of the evaluation at this step")
    p.add_argument("--key", default="fid", help="the headline column: fid or kid")
    args = p.parse_args()
    extra = ["class_accuracy", "intra_fid"]
    print(f"| run | steps | {args.key.upper()} at {args.at} | final {args.key.upper()} | precision | recall | coverage | "
          + " | ".join(extra) + " |")
    print("|---" * (7 + len(extra)) + "|")
    for path in args.csv:
        rows = read_table(Path(path))
        last = rows[-1]
        at = next((r for r in rows if r["steps"] == args.at), None)
        name = Path(path).parent.name if Path(path).stem == "time_to_quality" else Path(path).stem
        cells = [name, f"{int(last['steps']):,}", f"{at[args.key]:.4g}" if at else "–", f"{last[args.key]:.4g}",
                 f"{last['precision']:.3f}", f"{last['recall']:.3f}", f"{last['coverage']:.3f}",
                 *(f"{last[k]:.4g}" if k in last else "–" for k in extra)]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
