#!/usr/bin/env python3
"""A fingerprint of what training writes, to show that a change to the code left its behaviour alone: three
300-step runs (plain MNIST, conditional MNIST, the emoji at 64x64 RGB with --augment ada and --r1), each with
grids, evaluations and checkpoints every 100 steps, and the SHA-256 of every file they write, wall time taken
out: metrics.csv without its seconds and it_per_s columns, checkpoints loaded and hashed entry by entry without
their elapsed time. Run it before and after a change on the same machine (float rounding differs between CPU
kinds), then compare:

    python bench/behaviour.py OUT.json [--cache-dir data] [--work-dir /tmp/dcgan-behaviour]
    python bench/behaviour.py --compare BEFORE.json AFTER.json
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
RUNS = {
    "plain": [],
    "conditional": ["--conditional", "on"],
    "emoji64": ["--dataset", "emoji", "--resolution", "64", "--augment", "ada", "--r1", "0.01", "--r1-every", "4",
                "--eval-num", "200"],
}
COMMON = ["--steps", "300", "--sample-every", "100", "--checkpoint-every", "100", "--eval-every", "100",
          "--eval-num", "500", "--log-every", "25", "--device", "cpu"]
WALL_TIME = ("seconds", "it_per_s")
# settings that say how a run executes, not what it computes: left out of config.json and the checkpoints' config
# before hashing, so that a version that adds one compares with one that has none
EXECUTION_ONLY = ("workers",)


def digest(value: Any) -> str:
    """One hash of a checkpoint's nested entries: tensors by dtype, shape and bytes, everything else by repr."""
    h = hashlib.sha256()

    def walk(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(v, dict):
            for k in sorted(v, key=str):
                h.update(f"K{k}".encode())
                walk(v[k])
        elif isinstance(v, (list, tuple)):
            h.update(f"L{len(v)}".encode())
            for x in v:
                walk(x)
        else:
            h.update(f"V{v!r}".encode())
    walk(value)
    return h.hexdigest()


def fingerprint(run_dir: Path, sample_dir: Path) -> dict[str, str]:
    out = {}
    for prefix, root in (("ck", run_dir), ("samples", sample_dir)):
        for path in sorted(root.rglob("*")):
            name = f"{prefix}/{path.relative_to(root)}"
            if not path.is_file() or "tensorboard" in path.parts or path.name == "train.lock" \
                    or path.suffix == ".gif" or path.name in ("losses.png", "metrics.png"):
                continue  # the curves, the GIF and TensorBoard's events: drawn or stamped with wall time
            out[name] = _hash(path)
    return out


def _hash(path: Path) -> str:
    if path.suffix == ".pt":
        state = torch.load(path, map_location="cpu", weights_only=True)
        state.pop("elapsed")
        state["config"] = {k: v for k, v in state["config"].items() if k not in EXECUTION_ONLY}
        return digest(state)
    if path.name == "config.json":
        config = json.loads(path.read_text())
        return digest({k: v for k, v in config.items() if k not in EXECUTION_ONLY})
    if path.name == "metrics.csv":
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        return digest([{k: v for k, v in r.items() if k not in WALL_TIME} for r in rows])
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?")
    p.add_argument("--cache-dir", default=str(ROOT / "data"))
    p.add_argument("--work-dir", default="/tmp/dcgan-behaviour", help="where the runs go (emptied first)")
    p.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = p.parse_args()
    if args.compare:
        before, after = (json.loads(Path(f).read_text()) for f in args.compare)
        bad = 0
        for run in RUNS:
            b, a = before["runs"][run], after["runs"][run]
            same = [k for k in b if a.get(k) == b[k]]
            differ = sorted(set(a) ^ set(b) | {k for k in b if k in a and a[k] != b[k]})
            print(f"{run}: {len(same)} of {len(b)} files identical" + (f"; differ: {', '.join(differ)}" if differ else ""))
            bad += bool(differ)
        print(f"CPU: {before['cpu']} then {after['cpu']}; commits {before['commit']} then {after['commit']}")
        sys.exit(1 if bad else 0)
    result: dict[str, Any] = {"cpu": torch.backends.cpu.get_cpu_capability(), "commit": subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
        "runs": {}}
    work = Path(args.work_dir)  # fixed: the run's paths are in its config.json and checkpoints
    shutil.rmtree(work, ignore_errors=True)
    for run, flags in RUNS.items():
        ck, samples = work / run / "ck", work / run / "samples"
        cmd = [sys.executable, str(ROOT / "dcgan.py"), "train", *COMMON, *flags, "--cache-dir", args.cache_dir,
               "--checkpoint-dir", str(ck), "--sample-dir", str(samples)]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
        result["runs"][run] = fingerprint(ck, samples)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
