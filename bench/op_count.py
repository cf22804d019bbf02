#!/usr/bin/env python3
"""ATen operators per training iteration, counted with torch.profiler on the CPU: a proxy for the kernel launches
an eager iteration costs on a GPU, where each operator is at least one launch and a small network waits on them.

Two figures, each per iteration, on one thread:
  iteration   the run set up as `dcgan.py train` sets it up (training/start.py), warmed up, then 16 iterations
              profiled as the loop runs them (update(), and the meter that a CSV row averages; one lazy R1 step
              among them under the default r1_every): top-level operators (those no other ATen operator
              called), all of them, those that do work, and the commonest
  API         top-level operators of digitgan.train(steps=60) less those of steps=30, divided by 30: the whole
              loop, its CSV rows every --log-every steps included (evaluations and TensorBoard off)

    python bench/op_count.py                       # the default preset
    python bench/op_count.py --set conditional=on  # any TrainConfig field, as --set NAME=VALUE
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch.profiler import ProfilerActivity, profile

import digitgan
from digitgan.training.distributed import World
from digitgan.training.lock import RunLock
from digitgan.training.start import start
from digitgan.training.steps import Meter, update
from time_to_quality import parse_set  # bench/, beside this file

ITERATIONS = 16
# Operators that only make a view, read a host scalar or return their input: no kernel on a GPU
NO_KERNEL = {"aten::" + name for name in (
    "detach", "view", "reshape", "_unsafe_view", "t", "transpose", "permute", "unsqueeze", "squeeze", "alias",
    "expand", "expand_as", "slice", "select", "view_as", "as_strided", "item", "to", "lift_fresh", "split", "unbind")}
QUIET = {"device": "cpu", "tensorboard": "off", "eval_every": 0}


def top_level(event) -> bool:
    """An ATen operator that no other ATen operator called (the autograd engine's nodes do not count as callers)."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return False
        parent = parent.cpu_parent
    return True


def started(overrides: dict[str, Any], folder: str):
    lock = RunLock()
    try:
        return start({**QUIET, "checkpoint_dir": f"{folder}/ck", "sample_dir": f"{folder}/s", **overrides}, False,
                     False, World(), lock)
    finally:
        lock.release()


def iteration(overrides: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        run = started(overrides, folder)
        meter = Meter(run.device)
        step = lambda: meter.add(update(run.state, run.G_step, run.D_step, run.batches, run.objective))
        for _ in range(ITERATIONS):  # warm-up: the optimizers' state exists, a first R1 step has run
            step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(ITERATIONS):
                step()
    ops = [e for e in prof.events() if e.name.startswith("aten::")]
    top = [e for e in ops if top_level(e)]
    common = collections.Counter(e.name for e in top).most_common(12)
    # a `to` that copies calls _to_copy inside it: it launches work, so it is not counted out
    launching = [e for e in top if e.name not in NO_KERNEL or any(c.name == "aten::_to_copy" for c in e.cpu_children)]
    return {"top_level": len(top) / ITERATIONS, "all": len(ops) / ITERATIONS, "launching": len(launching) / ITERATIONS,
            "commonest": [(name, n / ITERATIONS) for name, n in common]}


def api(overrides: dict[str, Any]) -> float:
    """(top-level operators of a 60-step train() - those of a 30-step one) / 30."""
    counts = {}
    for steps in (30, 60):
        with tempfile.TemporaryDirectory() as folder:
            settings = {**QUIET, "checkpoint_dir": f"{folder}/ck", "sample_dir": f"{folder}/s", **overrides}
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                digitgan.train(**settings, steps=steps)
        counts[steps] = sum(1 for e in prof.events() if e.name.startswith("aten::") and top_level(e))
    return (counts[60] - counts[30]) / 30


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a TrainConfig field")
    args = p.parse_args()
    torch.set_num_threads(1)
    overrides = parse_set(args.set)
    result = iteration(overrides)
    print(f"settings: {' '.join(args.set) or 'the default preset'}; torch {torch.__version__}; "
          f"{ITERATIONS} iterations profiled")
    print(f"top-level ATen operators per iteration: {result['top_level']:.1f} (with nested ones: {result['all']:.1f}); "
          f"of the top-level ones, {result['launching']:.1f} do work (not a view, a host scalar's read or a no-op)")
    print("commonest top-level, per iteration: " + ", ".join(f"{n} {c:g}" for n, c in result["commonest"]))
    print(f"through the API (train() of 60 steps less 30, over 30): {api(overrides):.1f} top-level per iteration")


if __name__ == "__main__":
    main()
