"""Several processes (torchrun): what one iteration all-reduces, what that costs over a link, and the measured
speed of 1 process against 2 on this machine.

    python bench/distributed.py --volume          # bytes and collectives per iteration, both presets (no timing)
    python bench/distributed.py --scaling 300 3   # 300 steps, 3 rounds of (1 process, 2 processes), medians
    python bench/distributed.py --exactness       # how far apart runs that differ only in summation order drift

--volume measures the collective count by running one iteration of each preset in one process with hooks on the
batch norms (each GlobalBatchNorm forward in training mode is 2 all-reduces, and 2 more in the backward where a
gradient flows back through it) and adds the one all-reduce of the updated network's gradients per D or G step.
The link figures are a model, not a measurement: a ring all-reduce sends and receives
2 (N-1)/N times the buffer per process; the bandwidths and per-collective latencies are the assumptions printed.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from digitgan.config import resolve  # noqa: E402
from digitgan.nets.networks import build_models, sample_noise  # noqa: E402
from digitgan.training.objective import Objective  # noqa: E402
from digitgan.training.steps import d_update, g_update  # noqa: E402

# (name, bandwidth per direction in bytes/s, latency of one small all-reduce in s): assumptions, see the README
LINKS = (("NVLink 4 (H100 SXM)", 450e9, 10e-6), ("25 Gb/s Ethernet", 25e9 / 8, 50e-6))


def collectives_per_iteration(preset: str) -> tuple[int, int, int, int]:
    """(G parameter bytes, D parameter bytes, batch-norm all-reduces per iteration, their bytes)."""
    cfg = resolve({"preset": preset, "device": "cpu"})
    torch.manual_seed(0)
    G, D = build_models(cfg)
    count, payload = [0], [0]

    def hook(module, inputs, output):  # a training-mode batch norm: 2 all-reduces of C floats (sum, then variance)
        if module.training:
            backward = torch.is_grad_enabled()
            count[0] += 2 * (1 + backward)
            payload[0] += 2 * (1 + backward) * module.num_features * 4

    for m in [*G.modules(), *D.modules()]:
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.register_forward_hook(hook)
    b = cfg.batch_size
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(b, 1, 32, 32) * 2 - 1
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    objective = Objective()
    for _ in range(cfg.d_steps):
        d_update(G, D, opt_d, real, sample_noise(cfg, b, gen, "cpu"), objective)
    for _ in range(cfg.g_steps):
        g_update(G, D, opt_g, sample_noise(cfg, b, gen, "cpu"), objective)
    nbytes = lambda m: sum(p.numel() * p.element_size() for p in m.parameters())
    return nbytes(G), nbytes(D), count[0], payload[0]


def volume() -> None:
    print("Per iteration (one D step and one G step each; the seed preset: 1 D + 2 G steps), float32 gradients.")
    print("Assumed links: " + "; ".join(f"{name}: {bw / 1e9:g} GB/s per direction, {lat * 1e6:g} us per small "
                                        f"all-reduce" for name, bw, lat in LINKS))
    for preset in ("dcgan", "seed"):
        g, d, bn_calls, bn_bytes = collectives_per_iteration(preset)
        cfg = resolve({"preset": preset})
        grads = cfg.d_steps * d + cfg.g_steps * g  # D's gradients averaged each D step, G's each G step
        calls = bn_calls + cfg.d_steps + cfg.g_steps
        print(f"\n{preset}: G {g / 1e6:.2f} MB ({g // 4:,} parameters), D {d / 1e6:.2f} MB ({d // 4:,}); gradients "
              f"all-reduced per iteration {grads / 1e6:.2f} MB in {cfg.d_steps + cfg.g_steps} calls, plus "
              f"{bn_calls} batch-norm all-reduces ({bn_bytes / 1e3:.1f} kB)")
        for n in (2, 8):
            moved = 2 * (n - 1) / n * (grads + bn_bytes)
            times = ", ".join(f"{name}: {1e3 * (moved / bw + calls * lat):.3f} ms "
                              f"({1e3 * moved / bw:.3f} bandwidth + {1e3 * calls * lat:.3f} latency)"
                              for name, bw, lat in LINKS)
            print(f"  {n} processes: {moved / 1e6:.2f} MB sent per process per iteration; {times}")


def rate(cmd: list[str]) -> float:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    m = re.search(r"done: step \d+ \(([\d.]+) it/s", done.stderr)
    if done.returncode or not m:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return float(m.group(1))


def scaling(steps: int, rounds: int, out: Path) -> None:
    flags = ["train", "--steps", str(steps), "--eval-every", "0", "--tensorboard", "off", "--sample-every", "100000",
             "--device", "cpu", "--fresh", "--force", "--checkpoint-dir", str(out / "ck"), "--sample-dir",
             str(out / "s")]
    kinds = {"1 process (2 threads)": [sys.executable, "dcgan.py", *flags],
             "2 processes (torchrun, gloo, 1 thread each)": [sys.executable, "-m", "torch.distributed.run",
                                                             "--standalone", "--nproc_per_node", "2", "dcgan.py",
                                                             *flags]}
    found: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(rounds):
        for kind, cmd in kinds.items():
            found[kind].append(rate(cmd))
            print(f"round {r + 1}: {kind}: {found[kind][-1]:.1f} it/s", flush=True)
    base = statistics.median(found["1 process (2 threads)"])
    for kind, rates in found.items():
        print(f"{kind}: median {statistics.median(rates):.1f} it/s over {rounds} runs of {steps} steps "
              f"({statistics.median(rates) / base:.2f}x one process)")


def metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "ck" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def drift(a: Path, b: Path) -> str:
    """The largest relative difference of the losses and D's outputs between two runs' CSVs, by step."""
    rows = [metrics(p) for p in (a, b)]
    worst = [max(abs(float(r[k]) - float(s[k])) / abs(float(r[k])) for k in ("d_loss", "g_loss", "d_real", "d_fake"))
             for r, s in zip(*rows)]
    at = lambda n: f"step {n}: {max(worst[:n]):.1e}"
    return f"{at(5)}, {at(7)}, {at(10)}, {at(50)} (the largest up to each step)"


def norm_differences(a: Path, b: Path) -> str:
    """How far the gradient norms of two runs' CSVs lie apart, step by step: the median and the largest relative
    difference of each network's, and at how many steps it is over 1e-5."""
    rows = [metrics(p) for p in (a, b)]
    parts = []
    for key in ("grad_norm_d", "grad_norm_g"):
        diff = [abs(float(r[key]) - float(s[key])) / abs(float(r[key])) for r, s in zip(*rows)]
        parts.append(f"{key} median {statistics.median(diff):.1e}, largest {max(diff):.1e}, "
                     f"{sum(d > 1e-5 for d in diff)} of {len(diff)} steps over 1e-5")
    return "; ".join(parts)


def exactness(out: Path) -> None:
    """50 steps (width 8, batch 32, a CSV row per step) run twice, differing in summation order only."""
    def run(name: str, *extra: str, n: int = 1, threads: str | None = None) -> Path:
        flags = ["train", "--steps", "50", "--batch-size", "32", "--width", "8", "--log-every", "1", "--eval-every",
                 "0", "--tensorboard", "off", "--sample-every", "1000", "--device", "cpu", "--fresh", "--force",
                 "--checkpoint-dir", str(out / name / "ck"), "--sample-dir", str(out / name / "s"), *extra]
        cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)] if n > 1
               else [sys.executable]) + ["dcgan.py", *flags]
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # torchrun's 1 a rank
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT,
                       env={**env, **({"OMP_NUM_THREADS": threads} if threads else {})})
        return out / name
    for lr in ("4e-3", "1e-5"):
        lrs = ("--lr-d", lr, "--lr-g", lr)
        one = run(f"one-{lr}", *lrs)
        print(f"lr {lr}: 1 process, channels_last on vs off: " + drift(one, run(f"cl-off-{lr}", *lrs, "--channels-last", "off")))
        print(f"lr {lr}: 1 process vs 2 processes (torchrun, gloo): " + drift(one, run(f"two-{lr}", *lrs, n=2)))
    # R1 strong and at every step: its double backward through the global batch norm's all-reduces
    r1 = ("--lr-d", "1e-5", "--lr-g", "1e-5", "--r1", "10", "--r1-every", "1")
    one, two = run("one-r1", *r1, threads="2"), run("two-r1", *r1, n=2)
    print("lr 1e-5, R1 gamma 10 at every step: 1 process vs 2 processes: " + drift(one, two))
    # tests/test_distributed.py's setting: the gradient norms, with the plain process on 1 thread or on 2
    single = run("one-r1-1thread", *r1, threads="1")
    for name, (a, b) in {"1 process on 2 threads vs 2 processes": (one, two),
                         "1 process on 1 thread vs 2 processes": (single, two),
                         "1 process on 1 thread vs on 2 threads": (single, one)}.items():
        print(f"lr 1e-5, R1 gamma 10 at every step, gradient norms, {name}: {norm_differences(a, b)}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--volume", action="store_true")
    p.add_argument("--scaling", nargs=2, type=int, metavar=("STEPS", "ROUNDS"))
    p.add_argument("--exactness", action="store_true")
    p.add_argument("--out", default="/tmp/dcgan-bench-distributed")
    a = p.parse_args()
    if a.volume:
        volume()
    if a.scaling:
        scaling(*a.scaling, Path(a.out))
    if a.exactness:
        exactness(Path(a.out))
