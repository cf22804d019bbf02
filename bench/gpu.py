#!/usr/bin/env python3
"""Everything the GPU machine is for, in one run of at most 8 minutes: the CUDA tests, the speed of every variant,
the default schedule's wall time, time to quality with bf16 and compile on and off, exact resume, the seed
preset, then the rest of the suite.

    python3 bench/gpu.py OUT              # on the GPU machine (its own python3; the MNIST and EfficientNet-Lite0
                                          # wheels carried in data/: 18 MB of the carry's 64)
    python3 bench/gpu.py OUT --dry-run    # every step tiny, on the CPU, with no time limits: the script runs end to end
    python3 bench/gpu.py OUT --only cuda-tests,exactness   # a rerun of some steps

Each step is a process of its own under its own time limit, and all of them share one budget (--budget), so a
hang or a slow compile costs only its step; the steps go in the order of what the run must show first. OUT gets
few files, easy to copy back from a remote machine: summary.txt (also printed at the end), log.txt (every step's
output), results.json, throughput.jsonl and ttq.csv. Runs are written to a scratch folder, not to OUT.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
ENV_REPORT = """
import subprocess, torch, digitgan, dcgan
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device {p.name}, capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB")
    print(subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit",
                          "--format=csv"], capture_output=True, text=True).stdout.strip())
else:
    print("no CUDA device: the CPU")
"""


@dataclass
class Step:
    name: str
    limit: float  # seconds
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    figures: dict = field(default_factory=dict)  # what its output says, parsed


def train_flags(run: Path, **settings) -> list[str]:
    flags = {"checkpoint_dir": run / "ck", "sample_dir": run / "samples", **settings}
    return [a for k, v in flags.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def plan(out: Path, scratch: Path, dry: bool) -> list[Step]:
    """The steps, most needed first."""
    tiny = dict(width=4, batch_size=8, device="cpu") if dry else {}
    throughput = [PY, "bench/throughput.py", "--json", str(out / "throughput.jsonl"),
                  *(["--dry-run", "--device", "cpu"] if dry else [])]
    ttq = lambda name, *sets: Step(f"ttq-{name}", 30, [
        PY, "bench/time_to_quality.py", "--minutes", "0.01" if dry else "0.2", "--eval-every", "5" if dry else "1000",
        "--eval-num", "100" if dry else "2000", "--out", str(scratch / f"ttq-{name}"),
        *(a for s in [*sets, *(f"{k}={v}" for k, v in tiny.items())] for a in ("--set", s))])
    steps = [
        Step("env", 30, [PY, "-c", ENV_REPORT]),
        # MNIST's cache and the evaluator's, made there from the carried wheel (the caches would not fit the 64 MiB
        # that travels): a no-op where they are present
        Step("data", 90, [PY, "dcgan.py", "data"]),
        Step("cuda-tests", 150, [PY, "-m", "pytest", "-v", "-p", "no:cacheprovider", "tests/test_cuda.py"],
             env={"DCGAN_TEST_DEVICE": "cpu", "DCGAN_TEST_STEPS": "2"} if dry else {"DCGAN_TEST_STEPS": "100"}),
        Step("exactness", 45, [PY, "bench/gpu.py", str(out), "--exactness", str(scratch / "exact"),
                               *(["--dry-run"] if dry else [])]),
        # the auto defaults (float32 eager) against bf16, eager and compiled (compiling float32 failed Inductor's
        # own stride check in convolution_backward on torch 2.11: the first GPU run, 2026-11-26)
        ttq("auto"), ttq("bf16", "autocast=bf16"),
        # (the dry run leaves compiling to the GPU, so there this would repeat ttq-bf16)
        *([] if dry else [ttq("bf16-compile", "autocast=bf16", "compile=on")]),
        Step("seed-1000", 40, [PY, "dcgan.py", "train", *train_flags(
            scratch / "seed", preset="seed", steps=2 if dry else 1000, eval_every=0, sample_every=1000,
            tensorboard="off", **tiny)]),
        Step("throughput-eager", 45, [*throughput, "--gpu", "eager"]),
        Step("throughput-compile", 75, [*throughput, "--gpu", "compile"]),
        Step("default-5000", 45, [PY, "dcgan.py", "train", *train_flags(
            scratch / "default", **({"steps": 4, "eval_every": 2, "eval_num": 100, "sample_every": 2} if dry
                                    else {"steps": 5000}), **tiny)]),
        Step("throughput-cudagraphs", 40, [*throughput, "--gpu", "cudagraphs"]),
        Step("throughput-autotune", 60, [*throughput, "--gpu", "autotune"]),
        # -v: each test's outcome is in the log as it ends, so a suite killed at its limit still says which failed
        # (the first GPU run's -q showed only dots, Fs and Es); -rfE --tb=line: one line of why, at the end
        Step("suite", 120, [PY, "-m", "pytest", "-v", "-rfE", "--tb=line", "-p", "no:cacheprovider",
                            # (the dry run: one quick test shows the step runs; the suite itself runs beside it)
                            *(["tests/test_models.py::test_seed_preset_layers_are_the_originals"] if dry
                              else ["-n", "12", "tests", "--ignore=tests/test_cuda.py"])]),
    ]
    return steps


def run_step(step: Step, limit: float | None, log) -> dict:
    """Run one step in its own process group, killed at its limit (None: none); its output goes to the log."""
    log.write(f"\n===== {step.name} (limit {'none' if limit is None else f'{limit:.0f} s'}): {' '.join(step.argv)}\n")
    log.flush()
    started = time.monotonic()
    proc = subprocess.Popen(step.argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **step.env}, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=limit)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        output, _ = proc.communicate()
        timed_out = True
    seconds = time.monotonic() - started
    log.write(output)
    log.write(f"===== {step.name}: {'killed at its limit' if timed_out else f'exit {proc.returncode}'} after "
              f"{seconds:.1f} s\n")
    log.flush()
    return {"step": step.name, "rc": None if timed_out else proc.returncode, "timed_out": timed_out,
            "seconds": round(seconds, 1), **read_figures(step.name, output)}


def read_figures(name: str, output: str) -> dict:
    """The figures a step's output carries: its last line, and what the summary needs."""
    lines = [line for line in output.replace("\r", "\n").splitlines() if line.strip()]
    figures: dict = {"last_line": lines[-1][:300] if lines else ""}
    if name in ("default-5000", "seed-1000") and (
            m := re.search(r"done: step (\d+) \(([\d.]+) it/s this session\)", output)):
        figures.update(steps=int(m.group(1)), its_per_s=float(m.group(2)))
    if m := re.search(r"(\d+) passed", output):
        figures["passed"] = int(m.group(1))
    for word in ("failed", "skipped", "error"):
        if m := re.search(rf"(\d+) {word}", output):
            figures[word] = int(m.group(1))
    if name == "env":
        figures["report"] = lines[:4]
    if name.startswith("ttq-"):
        figures["ladder"] = [line for line in lines if line.startswith(("FID <=", "real-data"))]
    if name == "exactness":
        figures["exactness"] = [line for line in lines if line.startswith("exact")]
    return figures


def merge_ttq(scratch: Path, out: Path) -> None:
    rows = []
    for path in sorted(scratch.glob("ttq-*/time_to_quality.csv")):
        with open(path) as f:
            rows += [{"run": path.parent.name, **r} for r in csv.DictReader(f)]
    if rows:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(out / "ttq.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)


def summary(results: list[dict], out: Path, budget: float, started: float) -> str:
    lines = [f"bench/gpu.py: {len(results)} steps in {time.monotonic() - started:.0f} s of a {budget:.0f} s budget"]
    for r in results:
        state = ("cut (no budget left)" if r.get("cut") else "killed at its limit" if r["timed_out"]
                 else "ok" if r["rc"] == 0 else f"FAILED (exit {r['rc']})")
        extra = ", ".join(f"{k} {r[k]}" for k in ("passed", "failed", "skipped", "error", "its_per_s") if k in r)
        lines.append(f"{r['step']:22s} {state:20s} {r.get('seconds', 0):6.1f} s  {extra}")
        for key in ("report", "ladder", "exactness"):
            lines += [f"    {line}" for line in r.get(key, [])]
    path = out / "throughput.jsonl"
    if path.exists():
        lines.append("throughput (ms/it, TFLOP/s, share of the bf16 GEMM peak measured beside it):")
        for record in map(json.loads, path.read_text().splitlines()):
            lines.append(f"    {record['variant']:46s} " + (
                f"failed: {record['error'][:60]}" if "error" in record else
                f"{record['ms_per_it']:8.3f} ms/it {record['images_per_s']:9.0f} img/s {record['tflops']:6.2f} "
                f"TFLOP/s {record['share_of_peak']:6.1%}"))
            if record["variant"].startswith("seed eager (the auto") and "ms_per_it" in record:
                lines.append(f"    -> seed preset's 150,000 iterations at this speed: "
                             f"{150_000 * record['ms_per_it'] / 60_000:.1f} min")
    return "\n".join(lines)


def exactness(work: Path, dry: bool) -> None:
    """N + resume + N against 2N straight, under --deterministic on and under the fast defaults: prints whether
    every entry of the two final checkpoints but the wall time is equal, and the largest weight difference."""
    sys.path.insert(0, str(ROOT))
    import torch
    import digitgan
    from digitgan.training import checkpoints
    n = 2 if dry else 100
    base = dict(eval_every=0, sample_every=10**6, checkpoint_every=n, tensorboard="off", log_every=1 if dry else 50,
                **(dict(width=4, batch_size=8, device="cpu") if dry else {}))
    for mode in ("on", "off"):
        runs = {}
        for name, sessions in (("straight", [2 * n]), ("resumed", [n, 2 * n])):
            d = work / mode / name
            for steps in sessions:
                digitgan.train(**base, deterministic=mode, steps=steps, checkpoint_dir=str(d / "ck"),
                               sample_dir=str(d / "samples"))
            runs[name] = checkpoints.load(d / "ck" / f"ckpt_{2 * n:07d}.pt")
        a, b = runs["straight"], runs["resumed"]
        worst = max((a[p][k].float() - b[p][k].float()).abs().max().item()
                    for p in ("generator", "generator_ema", "discriminator") for k in a[p])
        same = all(torch.equal(a[p][k], b[p][k]) for p in ("generator", "generator_ema", "discriminator")
                   for k in a[p])
        print(f"exact resume, --deterministic {mode}: {n} + {n} steps {'==' if same else '!='} {2 * n} straight "
              f"(largest weight difference {worst:.3g})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="a folder for the results (made if missing)")
    p.add_argument("--dry-run", action="store_true", help="every step tiny, on the CPU")
    p.add_argument("--budget", type=float, default=450.0, help="seconds for all the steps together")
    p.add_argument("--only", default="", help="comma-separated step names: run only these")
    p.add_argument("--exactness", type=Path, default=None, help=argparse.SUPPRESS)  # the exactness step itself
    args = p.parse_args()
    if args.exactness:
        return exactness(args.exactness, args.dry_run)
    args.out.mkdir(parents=True, exist_ok=True)
    started, results = time.monotonic(), []
    with tempfile.TemporaryDirectory(prefix="dcgan-gpu-") as scratch, open(args.out / "log.txt", "w") as log:
        steps = plan(args.out.resolve(), Path(scratch), args.dry_run)
        only = set(filter(None, args.only.split(",")))
        for step in steps:
            if only and step.name not in only:
                continue
            left = args.budget - (time.monotonic() - started)
            if left < 5 and not args.dry_run:
                results.append({"step": step.name, "cut": True, "timed_out": False, "rc": None})
                continue
            # the dry run shows that every step runs, on a CPU of any speed and load: its limits are the GPU's
            results.append(run_step(step, None if args.dry_run else min(step.limit, left), log))
            print(f"[{time.monotonic() - started:5.0f} s] {step.name}: "
                  f"{'killed at its limit' if results[-1]['timed_out'] else 'exit %s' % results[-1]['rc']}",
                  flush=True)
        merge_ttq(Path(scratch), args.out)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    text = summary(results, args.out, args.budget, started)
    (args.out / "summary.txt").write_text(text + "\n")
    print(text)
    sys.exit(0 if all(r.get("rc") == 0 for r in results) else 1)


if __name__ == "__main__":
    main()
