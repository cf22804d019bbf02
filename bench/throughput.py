#!/usr/bin/env python3
"""Training speed on this machine: ms per iteration, images per second, FLOP rate against the GEMM peak.

One iteration = the preset's D steps, its G steps and the weight-average update, through the same functions
the trainer calls, on real MNIST batches. Variants are timed in interleaved rounds (the machines are noisy)
and each figure is the median over rounds.

    python bench/throughput.py                # each preset as it trains by default
    python bench/throughput.py --compare      # seed: straightforward vs ours; default preset: share of GEMM peak
    python bench/throughput.py --variants     # default preset under every speed switch, batch size, thread count
    python bench/throughput.py --conditional  # default preset with and without --conditional on, same rounds
    python bench/throughput.py --projected --dataset emoji --resolution 64   # today's D against the projected one
    python bench/throughput.py --share --dataset emoji --resolution 64   # the default preset's share of the peak
                                                                         # on other data (here 64x64 RGB)
    python bench/throughput.py --gpu eager --json out.jsonl   # a group of CUDA variants (bench/gpu.py runs them)

On CUDA nothing is read back per iteration: a round of iterations is waited for once, at its end.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from digitgan.config import TrainConfig, resolve  # noqa: E402
from digitgan.data.mnist import MNIST  # noqa: E402
from digitgan.data.shape import Shape  # noqa: E402
from digitgan.data.sampler import BatchSampler  # noqa: E402
from digitgan.data.sources import load_dataset  # noqa: E402
from digitgan.core.devices import pick_device, speed_settings  # noqa: E402
from digitgan.nets.networks import build_models, sample_noise  # noqa: E402
from digitgan.training.adam import Adam  # noqa: E402
from digitgan.training.state import Averager  # noqa: E402
from digitgan.training.objective import Objective  # noqa: E402
from digitgan.training.steps import d_update, g_update, prepare  # noqa: E402

# The straightforward port: PyTorch's own convolution kernels in their default layout.
STRAIGHTFORWARD = dict(conv_impl="direct", channels_last="off", autocast="off", compile="off")
GEMM_N = 2048  # the GEMM whose FLOP rate is the peak
BIG_KERNEL_LAYER = "net.6"  # SeedGenerator's last layer, the 32x32-kernel transposed conv


def gemm(device: torch.device, n: int = GEMM_N, dtype: torch.dtype = torch.float32) -> Callable[[], None]:
    """One n x n torch.mm: timed in the same interleaved rounds as what it is compared with, so the machine's
    load at the moment (these machines are shared) scales both alike."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    return lambda: a @ b


def gemm_rate(seconds: float, n: int = GEMM_N) -> float:
    """FLOP/s of one n x n torch.mm that took `seconds`."""
    return 2 * n ** 3 / seconds


def make_iteration(overrides: dict[str, Any], device: torch.device, images: torch.Tensor,
                   optimizer: dict[str, Any] | None = None, labels: torch.Tensor | None = None,
                   compile_mode: str | None = None,
                   shape: Shape = MNIST.known_shape(32, 0)) -> tuple[Callable[[], None], TrainConfig]:
    """A closure running one training iteration of the config (labels: the images', for a conditional one),
    and the config. compile_mode: torch.compile's mode for both networks instead of the config's compile
    ("eager-backend": Dynamo without Inductor, for dry runs on the CPU)."""
    cfg = resolve(overrides)
    speed = speed_settings(cfg, device)
    if compile_mode:
        speed = dataclasses.replace(speed, compile=False)
    speed.apply()
    torch.manual_seed(0)
    G, D = (m.to(device) for m in build_models(cfg, shape))
    # the trainer's own Adam, or torch.optim's with the options given (fused, for-loop) to compare with it
    opt_g, opt_d = ((torch.optim.Adam(m.parameters(), lr=lr, betas=(cfg.beta1, cfg.beta2), **optimizer) if optimizer
                     else Adam(m.parameters(), lr=lr, betas=(cfg.beta1, cfg.beta2)))
                    for m, lr in ((G, cfg.lr_g), (D, cfg.lr_d)))
    speed.place(G, D)
    G_step, D_step = prepare(G, D, speed)
    if compile_mode:
        how = {"backend": "eager"} if compile_mode == "eager-backend" else {"mode": compile_mode}
        G_step, D_step = torch.compile(G_step, **how), torch.compile(D_step, **how)
    graphs = compile_mode == "reduce-overhead"  # CUDA graphs: each update is a new step of the graph trees
    ema = Averager(G, cfg.ema) if cfg.ema else None
    if speed.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    sampler, gen = BatchSampler(len(images), cfg.batch_size, 0, device), torch.Generator(device).manual_seed(0)
    objective = Objective(amp=speed.autocast)
    conditional = cfg.conditional == "on"
    fake_labels = lambda: (torch.randint(len(shape.classes), (cfg.batch_size,), generator=gen, device=device)
                           if conditional else None)

    def iteration() -> None:
        for _ in range(cfg.d_steps):
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            idx = sampler.next()
            d_update(G_step, D_step, opt_d, images[idx], sample_noise(cfg, cfg.batch_size, gen, device), objective,
                     labels[idx] if conditional else None, fake_labels())
        for _ in range(cfg.g_steps):
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            g_update(G_step, D_step, opt_g, sample_noise(cfg, cfg.batch_size, gen, device), objective, fake_labels())
        if ema:
            ema.update(1000)
    return iteration, cfg


def wait(device: torch.device) -> None:
    """Wait for the device's queued work (the CPU's is done when its call returns)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Unattributed:
    """A stand-in for FlopCounterMode's module tracker: every FLOP counted under "Global" alone. The tracker hooks
    each module's inputs for the backward pass, which autograd.grad refuses when an input is a leaf that needs a
    gradient: a spectral-norm parametrization's weight (the projected D's heads)."""

    parents = ("Global",)

    def __enter__(self) -> "_Unattributed":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def count_flops(iteration: Callable[[], None]) -> dict[str, int]:
    """FLOPs of one iteration in all ("Global") and per module (FlopCounterMode's Class.path names; "Global" alone
    where the module tracker cannot follow the iteration)."""
    try:
        with FlopCounterMode(display=False) as counter:
            iteration()
    except RuntimeError as e:
        if "_will_engine_execute_node" not in str(e):
            raise
        counter = FlopCounterMode(display=False)
        counter.mod_tracker = _Unattributed()  # type: ignore[assignment]
        with counter:
            iteration()
    return {module: sum(ops.values()) for module, ops in counter.get_flop_counts().items()}


def time_interleaved(iterations: dict[str, Callable[[], None]], rounds: int, per_round: int = 1,
                     warmup: int = 2, device: torch.device = torch.device("cpu")) -> dict[str, float]:
    """Median seconds per iteration of each, over `rounds` rounds that take turns (each round waited for once,
    at its end)."""
    for it in iterations.values():
        for _ in range(warmup):
            it()
        wait(device)
    times: dict[str, list[float]] = {name: [] for name in iterations}
    for _ in range(rounds):
        for name, it in iterations.items():
            t = time.perf_counter()
            for _ in range(per_round):
                it()
            wait(device)
            times[name].append((time.perf_counter() - t) / per_round)
    return {name: statistics.median(ts) for name, ts in times.items()}


def compare(device: torch.device, images: torch.Tensor, rounds: int) -> None:
    straightforward = make_iteration({"preset": "seed", **STRAIGHTFORWARD}, device, images)[0]
    seed = time_interleaved({"straightforward": straightforward, "ours": make_iteration({"preset": "seed"}, device, images)[0],
                             "gemm": gemm(device)}, rounds=5, warmup=1)
    speedup = seed["straightforward"] / seed["ours"]
    print(f"seed preset, batch 256, 1 D + 2 G steps: straightforward {1000 * seed['straightforward']:.0f} ms/it, "
          f"ours {1000 * seed['ours']:.0f} ms/it (median of 5 interleaved rounds): {speedup:.1f}x")
    # What no formulation of the 32x32-kernel layer can beat: that layer free, every other one at the GEMM peak.
    flops = count_flops(straightforward)
    total, big = flops["Global"], flops[f"SeedGenerator.{BIG_KERNEL_LAYER}"]
    floor = (total - big) / gemm_rate(seed["gemm"])
    print(f"  its FLOPs: {total / 1e9:.1f} G/it, {big / 1e9:.1f} G of them in the 32x32-kernel layer; the other "
          f"{(total - big) / 1e9:.1f} G would take {1000 * floor:.0f} ms at the GEMM peak of the same rounds, so "
          f"no formulation of that layer can beat {seed['straightforward'] / floor:.1f}x here")
    share = gemm_share(device, images, rounds)
    print(f"seed_speedup={speedup:.2f}")
    print(f"default_gemm_share={share:.3f}")


def gemm_share(device: torch.device, images: torch.Tensor, rounds: int, shape: Shape = MNIST.known_shape(32, 0)) -> float:
    """The default preset's FLOP rate on these images as a share of the fp32 GEMM peak timed in the same rounds."""
    iteration, cfg = make_iteration({}, device, images, shape=shape)
    flops = count_flops(iteration)["Global"]
    seconds = time_interleaved({"default": iteration, "gemm": gemm(device)}, rounds=rounds, per_round=5)
    peak, rate = gemm_rate(seconds["gemm"]), flops / seconds["default"]
    print(f"fp32 GEMM peak ({GEMM_N}x{GEMM_N} torch.mm, median of the same rounds): {peak / 1e9:.1f} GFLOP/s")
    print(f"default preset on {shape.describe()}, batch {cfg.batch_size}, width {cfg.width}: {flops / 1e9:.2f} "
          f"GFLOP/it (torch.utils.flop_counter), {1000 * seconds['default']:.1f} ms/it (median of {rounds} "
          f"interleaved rounds of 5), {rate / 1e9:.1f} GFLOP/s = {rate / peak:.0%} of the GEMM peak")
    return rate / peak


VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {  # name: (config overrides, Adam options)
    "default (channels_last, matmul/fft where they win)": ({}, {}),
    "NCHW (channels_last off)": ({"channels_last": "off"}, {}),
    "PyTorch's kernels for every layer (conv-impl direct)": ({"conv_impl": "direct"}, {}),
    "bf16 autocast": ({"autocast": "bf16"}, {}),
    "torch.compile": ({"compile": "on"}, {}),
    "fused Adam": ({}, {"fused": True}),
    "for-loop Adam (foreach off)": ({}, {"foreach": False}),
    "no weight average (ema 0)": ({"ema": 0.0}, {}),
    "batch 32": ({"batch_size": 32}, {}),
    "batch 128": ({"batch_size": 128}, {}),
    "batch 256": ({"batch_size": 256}, {}),
}


def variants(device: torch.device, images: torch.Tensor, rounds: int) -> None:
    iterations, flops = {"gemm": gemm(device)}, {}
    for name, (overrides, adam) in VARIANTS.items():
        iterations[name], _ = make_iteration(overrides, device, images, adam)
        flops[name] = count_flops(make_iteration({**overrides, "compile": "off"}, device, images, adam)[0])["Global"]
    seconds = time_interleaved(iterations, rounds=rounds, per_round=5)
    peak = gemm_rate(seconds.pop("gemm"))
    print(f"fp32 GEMM peak ({GEMM_N}x{GEMM_N} torch.mm, median of the same rounds): {peak / 1e9:.1f} GFLOP/s; "
          f"{torch.get_num_threads()} threads")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seconds["1 thread"] = time_interleaved({"1": iterations[next(iter(VARIANTS))]}, rounds=rounds, per_round=5)["1"]
    flops["1 thread"] = flops[next(iter(VARIANTS))]
    torch.set_num_threads(threads)
    for name, s in seconds.items():
        rate = flops[name] / s
        print(f"{name:52s} {1000 * s:7.1f} ms/it  {flops[name] / 1e9:6.2f} GFLOP/it  {rate / 1e9:6.1f} GFLOP/s "
              f"= {rate / peak:4.0%} of peak")


def conditional_cost(device: torch.device, images: torch.Tensor, labels: torch.Tensor, rounds: int) -> None:
    iterations = {name: make_iteration(overrides, device, images, labels=labels)[0]
                  for name, overrides in (("unconditional", {}), ("conditional", {"conditional": "on"}))}
    seconds = time_interleaved(iterations, rounds=rounds, per_round=5)
    for name, s in seconds.items():
        print(f"default preset, {name:13s} {1000 * s:6.1f} ms/it (median of {rounds} interleaved rounds of 5)")
    print(f"conditional_overhead={seconds['conditional'] / seconds['unconditional'] - 1:.3f}")


def projected_cost(device: torch.device, images: torch.Tensor, shape: Shape, cache_dir: str, rounds: int) -> None:
    """Today's D against the projected one (its feature network reading the pictures at their own side and at 128
    and 256), the default preset otherwise (its loss and no augmentation: what the networks cost), same rounds."""
    variants = {"dcgan D": {}, **{f"projected D, side {side}": {"discriminator": "projected", "projected_side": side}
                                  for side in (shape.resolution, 128, 256)}}
    made = {name: make_iteration({**overrides, "cache_dir": cache_dir}, device, images, shape=shape)
            for name, overrides in variants.items()}
    seconds = time_interleaved({name: it for name, (it, _) in made.items()}, rounds=rounds, per_round=3)
    for name, s in seconds.items():
        print(f"{name:24s} {1000 * s:7.1f} ms/it  {s / seconds['dcgan D']:5.2f}x (median of {rounds} interleaved "
              f"rounds of 3, {shape.describe()}, batch {made[name][1].batch_size})")


# CUDA variants by group, each group one process of bench/gpu.py with its own time limit (compiling is what can
# take long). name: (config overrides, Adam options, torch.compile mode or None for the config's own, TF32 on)
BF16, COMPILE = {"autocast": "bf16"}, {"compile": "on"}
GPU_GROUPS: dict[str, dict[str, tuple[dict[str, Any], dict[str, Any], str | None, bool]]] = {
    "eager": {
        "dcgan eager (the auto defaults: fp32, NHWC)": ({}, {}, None, False),
        "dcgan eager bf16": (BF16, {}, None, False),
        "dcgan eager fp32 + TF32": ({}, {}, None, True),
        "dcgan eager NCHW": ({"channels_last": "off"}, {}, None, False),
        "dcgan eager fused Adam": ({}, {"fused": True}, None, False),
        "dcgan eager batch 256": ({"batch_size": 256}, {}, None, False),
        "dcgan eager batch 1024": ({"batch_size": 1024}, {}, None, False),
        "dcgan eager, projected D (EfficientNet-Lite0 at 128 px)": ({"discriminator": "projected"}, {}, None, False),
        "seed eager (the auto defaults: banded FFT)": ({"preset": "seed"}, {}, None, False),
        "seed eager (32x32 layer by cuDNN)": ({"preset": "seed", "conv_impl": "direct"}, {}, None, False),
        "seed eager bf16": ({"preset": "seed", **BF16}, {}, None, False),
    },
    "compile": {
        "dcgan compile fp32": (COMPILE, {}, None, False),
        "dcgan compile bf16": ({**COMPILE, **BF16}, {}, None, False),
        "dcgan compile, deterministic": ({**COMPILE, "deterministic": "on"}, {}, None, False),
        "dcgan compile batch 256": ({**COMPILE, "batch_size": 256}, {}, None, False),
        "seed compile": ({"preset": "seed", **COMPILE}, {}, None, False),
        "seed compile, 32x32 layer by cuDNN": ({"preset": "seed", "conv_impl": "direct", **COMPILE}, {}, None, False),
    },
    "autotune": {
        "dcgan compile max-autotune-no-cudagraphs": ({}, {}, "max-autotune-no-cudagraphs", False),
    },
    "cudagraphs": {
        "dcgan compile reduce-overhead (CUDA graphs)": ({}, {}, "reduce-overhead", False),
        "seed compile reduce-overhead (CUDA graphs)": ({"preset": "seed"}, {}, "reduce-overhead", False),
    },
}
DRY = {"width": 4, "batch_size": 8}  # --dry-run: every variant at this size, on whatever device there is


def tf32(iteration: Callable[[], None]) -> Callable[[], None]:
    """iteration with TF32 allowed while it launches its kernels (the trainer keeps TF32 off)."""
    def run() -> None:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            iteration()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    return run


def gpu_group(group: str, device: torch.device, images: torch.Tensor, rounds: int, out: Path | None,
              dry_run: bool) -> None:
    """Time one group of GPU_GROUPS in interleaved rounds beside a bf16 GEMM (the peak the TFLOP/s are shared
    of), print a line per variant and append each as a JSON line to out. A variant that fails is a line too."""
    iterations: dict[str, Callable[[], None]] = {}
    info: dict[str, dict[str, Any]] = {}
    # every variant compiles the same forward code: past Dynamo's recompile limit (8) the later ones ran eager
    # (the first GPU run)
    torch._dynamo.config.recompile_limit = 64
    traced = False
    flops_of: dict[str, dict[str, int]] = {}
    for name, (overrides, adam, mode, tf32_on) in GPU_GROUPS[group].items():
        if dry_run:  # Dynamo without Inductor, for the group's first compiled variant only (a few seconds each)
            compiled = mode is not None or overrides.get("compile") == "on"
            overrides = {**overrides, **DRY, **({"compile": "off"} if compiled else {})}
            mode, traced = ("eager-backend" if compiled and not traced else None), traced or compiled
        try:
            started = time.perf_counter()
            it, cfg = make_iteration(overrides, device, images, adam, compile_mode=mode)
            it = tf32(it) if tf32_on else it
            it()  # the first call compiles, where compiling is asked for
            wait(device)
            setup = time.perf_counter() - started
            # counted once per shape of work: precision, layout, compiling and the optimiser change no FLOP count
            work = repr({k: v for k, v in dataclasses.asdict(cfg).items()
                         if k not in ("autocast", "channels_last", "compile", "deterministic")})
            if work not in flops_of:
                flops_of[work] = count_flops(make_iteration({**overrides, "compile": "off"}, device, images, adam)[0])
            flops = flops_of[work]["Global"]
        except Exception as e:  # a variant that does not run is a finding, not the end of the group
            info[name] = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"}
            continue
        iterations[name] = it
        info[name] = {"preset": cfg.preset, "batch_size": cfg.batch_size, "d_steps": cfg.d_steps,
                      "g_steps": cfg.g_steps, "first_call_s": setup, "flops_per_it": flops}
    peak_n = 256 if dry_run else 8192
    iterations["gemm"] = gemm(device, peak_n, torch.bfloat16)
    rounds, per_round = (1, 1) if dry_run else (rounds, 20)
    seconds = time_interleaved(iterations, rounds=rounds, per_round=per_round, warmup=1 if dry_run else 3,
                               device=device)
    peak = gemm_rate(seconds.pop("gemm"), peak_n)
    print(f"{group}: bf16 GEMM peak ({peak_n}x{peak_n}, same rounds) {peak / 1e12:.1f} TFLOP/s; median of "
          f"{rounds} interleaved rounds of {per_round} iterations, each round waited for once")
    for name, record in info.items():
        if name in seconds:
            s = seconds[name]
            record.update(ms_per_it=1000 * s, images_per_s=record["batch_size"] * record["d_steps"] / s,
                          tflops=record["flops_per_it"] / s / 1e12, share_of_peak=record["flops_per_it"] / s / peak)
            print(f"  {name:48s} {record['ms_per_it']:8.3f} ms/it {record['images_per_s']:10.0f} img/s "
                  f"{record['tflops']:7.2f} TFLOP/s {record['share_of_peak']:6.1%} of peak "
                  f"(first call {record['first_call_s']:.1f} s)")
        else:
            print(f"  {name:48s} failed: {record['error']}")
        if out:
            with open(out, "a") as f:
                f.write(json.dumps({"group": group, "variant": name, "device": str(device),
                                    "torch": torch.__version__, "peak_tflops": peak / 1e12, **record}) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--compare", action="store_true", help="seed: straightforward vs ours; default preset: "
                      "FLOPs and share of the GEMM peak; ends with seed_speedup= and default_gemm_share=")
    mode.add_argument("--variants", action="store_true", help="the default preset under every switch tried")
    mode.add_argument("--conditional", action="store_true", help="the default preset with and without "
                      "--conditional on; ends with conditional_overhead=")
    mode.add_argument("--projected", action="store_true", help="today's D against the projected one on --dataset "
                      "at --resolution, its feature network at three sides")
    mode.add_argument("--gpu", choices=GPU_GROUPS, help="one group of CUDA variants (bench/gpu.py runs each)")
    mode.add_argument("--share", action="store_true", help="the default preset's share of the GEMM peak on "
                      "--dataset at --resolution; ends with default_gemm_share=")
    p.add_argument("--dataset", default="mnist", help="--share: the data (mnist, fashion-mnist, emoji, a folder)")
    p.add_argument("--resolution", type=int, default=32, choices=(32, 64), help="--share: the side")
    p.add_argument("--json", type=Path, default=None, help="--gpu: append each variant's figures here, a JSON line each")
    p.add_argument("--dry-run", action="store_true", help="--gpu: every variant tiny, once, on any device "
                   "(compiling with Dynamo's eager backend)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", default="data")
    args = p.parse_args()
    device = pick_device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    data = load_dataset(args.dataset, "train", cache_dir=args.cache_dir, resolution=args.resolution)
    images = data.images.to(device)
    if args.share:
        print(f"default_gemm_share={gemm_share(device, images, args.rounds, data.shape):.3f}")
    elif args.gpu:
        gpu_group(args.gpu, device, images, args.rounds, args.json, args.dry_run)
    elif args.projected:
        projected_cost(device, images, data.shape, args.cache_dir, args.rounds)
    elif args.conditional:
        conditional_cost(device, images, data.labels.to(device), args.rounds)
    elif args.compare:
        compare(device, images, args.rounds)
    elif args.variants:
        variants(device, images, args.rounds)
    else:
        iterations = {preset: make_iteration({"preset": preset}, device, images) for preset in ("dcgan", "seed")}
        seconds = time_interleaved({k: it for k, (it, _) in iterations.items()}, rounds=3, warmup=1)
        for preset, (_, cfg) in iterations.items():
            s = seconds[preset]
            print(f"{preset:6s} batch {cfg.batch_size:4d}, {cfg.d_steps} D + {cfg.g_steps} G steps: "
                  f"{1000 * s:8.1f} ms/iteration, {cfg.batch_size * cfg.d_steps / s:6.0f} real images/s, "
                  f"its {cfg.steps} steps ~ {cfg.steps * s / 60:.1f} min")


if __name__ == "__main__":
    main()
