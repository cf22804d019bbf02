#!/usr/bin/env python3
"""Time to quality: train a preset from scratch for a wall-clock budget, evaluating every K steps.

Evaluation (--eval-num samples against the test set, or the held-out images of the emoji or a folder, in the
data's feature space) is not counted on the training clock. Writes OUT/time_to_quality.csv (wall seconds, steps,
images seen, every metric), OUT/time_to_quality.png (the headline figure and recall against wall seconds) and
prints when FID first falls to 50x, 20x, 10x and 5x the real-data reference. On small data the headline is KID,
whose real reference is about 0: then --before's last KID is the rung, and the ladder says when this run reached
it. --before draws an earlier run's CSV into the same plot and prints its ladder beside this one's.

    python bench/time_to_quality.py --preset dcgan --minutes 15 --eval-every 500 --out bench/out/ttq-dcgan \
        --before bench/results/ttq-dcgan-before.csv
    python bench/time_to_quality.py --set batch_size=128 --set lr_g=3e-4 --out bench/out/ttq-try
    python bench/time_to_quality.py --dataset emoji --resolution 64 --eval-num 2000 --out bench/out/ttq-emoji
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from digitgan.config import TrainConfig  # noqa: E402
from digitgan.core.charts import plot_curves  # noqa: E402
from digitgan.quality.metrics import CSV_KEYS  # noqa: E402
from digitgan.training.records import read_rows  # noqa: E402
from digitgan.training.loop import train  # noqa: E402

RUNGS = (50, 20, 10, 5)
REAL_FID = 0.033  # the shipped MNIST evaluator's real-data reference (real_reference.json of any run); --plot-from only


def read_table(path: Path) -> list[dict]:
    """A time_to_quality.csv's rows, numbers as floats (records.read_rows reads metrics.csv only)."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def parse_set(items: list[str]) -> dict:
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = {"int": int, "float": float, "str": str}[types[key]](value)
    return out


def ladder(rows: list[dict], reference_fid: float) -> dict[int, float | None]:
    """For each rung m: the first wall second at which FID <= m x the reference (None: not reached)."""
    return {m: next((r["wall_seconds"] for r in rows if r["fid"] <= m * reference_fid), None) for m in RUNGS}


def first_at(rows: list[dict], key: str, level: float) -> float | None:
    """The first wall second at which rows' key is at or below level (None: not reached)."""
    return next((r["wall_seconds"] for r in rows if r[key] <= level), None)


def plot(rows: list[dict], before: list[dict], reference_fid: float, path: Path, key: str = "fid") -> None:
    rungs = {f"{m}x reference": m * reference_fid for m in RUNGS} if key == "fid" else {}
    plot_curves([{**r, "step": r["wall_seconds"], **rungs}
                 for r in rows] + [{"step": r["wall_seconds"], f"{key} before": r[key], "recall before": r["recall"],
                                    "precision before": r["precision"]} for r in before],
                path,
                ((f"{key.upper()} vs training wall seconds (log scale)",
                  (key, *([f"{key} before"] if before else []), *rungs)),
                 ("recall / precision" + (" / class accuracy (conditional)" if "class_accuracy" in rows[0] else ""),
                  ("recall", "precision", *(["recall before", "precision before"] if before else []),
                   *(["class_accuracy"] if "class_accuracy" in rows[0] else [])))),
                log_first=True, xlabel="training wall seconds")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="dcgan")
    p.add_argument("--dataset", default="mnist", help="mnist, fashion-mnist, emoji or a folder")
    p.add_argument("--resolution", type=int, default=32, choices=(32, 64))
    p.add_argument("--minutes", type=float, default=15.0, help="training wall-clock budget")
    p.add_argument("--eval-every", type=int, default=500, help="steps between evaluations")
    p.add_argument("--eval-num", type=int, default=10000)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="any other training setting")
    p.add_argument("--out", default="bench/out/ttq", help="a new directory for the run and the results")
    p.add_argument("--before", default=None, help="an earlier time_to_quality.csv to compare with")
    p.add_argument("--plot-from", default=None, metavar="CSV", help="no training: plot this time_to_quality.csv "
                   "(with --before) into --out PNG")
    args = p.parse_args()
    before = read_table(Path(args.before)) if args.before else []
    if args.plot_from:
        plot(read_table(Path(args.plot_from)), before, REAL_FID, Path(args.out))
        return
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        sys.exit(f"error: {out}/ is not empty; pass a new --out")
    overrides = {**dict(preset=args.preset, dataset=args.dataset, resolution=args.resolution, steps=10**9, minutes=args.minutes, eval_every=args.eval_every,
                        eval_num=args.eval_num, checkpoint_every=5000, sample_every=args.eval_every,
                        checkpoint_dir=str(out / "run"), sample_dir=str(out / "samples")), **parse_set(args.set)}
    train(overrides)
    cfg = json.loads((out / "run" / "config.json").read_text())
    reference = json.loads((out / "run" / "real_reference.json").read_text())
    images_per_step = cfg["batch_size"] * cfg["d_steps"]
    rows = [{"wall_seconds": r["seconds"], "steps": int(r["step"]), "images_seen": int(r["step"]) * images_per_step,
             **{k: r[k] for k in CSV_KEYS if r.get(k, "") != ""}}
            for r in read_rows(out / "run" / "metrics.csv") if r["fid"] != ""]
    with open(out / "time_to_quality.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    key = reference["headline"]
    plot(rows, before, reference["fid"], out / "time_to_quality.png", key)
    print(f"{args.dataset} at {args.resolution}, in {reference['features']}: real-data reference FID "
          f"{reference['fid']:.3f}, KID {reference['kid']:.4f}; preset {args.preset}, {args.minutes} min budget, "
          f"{rows[-1]['steps']} steps, final FID {rows[-1]['fid']:.2f}, KID {rows[-1]['kid']:.4f}, precision "
          f"{rows[-1]['precision']:.3f}, recall {rows[-1]['recall']:.3f}"
          + (f", classes {rows[-1]['classes_covered']}" if "classes_covered" in rows[-1] else "")
          + (f", class accuracy {rows[-1]['class_accuracy']:.4f}, intra-class FID {rows[-1]['intra_fid']:.2f}"
             if "class_accuracy" in rows[-1] else ""))
    if key != "fid":
        if before:
            level, took = before[-1][key], before[-1]["wall_seconds"]
            t = first_at(rows, key, level)
            print(f"{key.upper()} <= {level:.4f} (--before's last, at {took:.0f} s): "
                  + (f"{t:.0f} s, {t / took:.2f} of its time" if t is not None else "not reached in the budget"))
        print(f"wrote {out / 'time_to_quality.csv'} and {out / 'time_to_quality.png'}")
        return
    was = ladder(before, reference["fid"]) if before else {}
    for m, t in ladder(rows, reference["fid"]).items():
        print(f"FID <= {m:2d}x reference ({m * reference['fid']:.2f}): "
              + (f"{t:.0f} s" if t is not None else "not reached in the budget")
              + (f" (before: {was[m]:.0f} s)" if was.get(m) is not None else " (before: not reached)" if before else ""))
    print(f"wrote {out / 'time_to_quality.csv'} and {out / 'time_to_quality.png'}")


if __name__ == "__main__":
    main()
