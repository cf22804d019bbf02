#!/usr/bin/env python3
"""ATen operators per training iteration, counted with torch.profiler on the CPU: a proxy for the kernel launches
an eager iteration costs on a GPU, where each operator is at least one launch and a small network waits on them.

Builds the run as `dcgan.py train` does (TrainState, Batches, Objective, the same update()), warms up, then
profiles 16 iterations (one lazy R1 step among them under the default r1_every) and reports per iteration the
top-level operators (those not called from inside another ATen operator), all of them, and the commonest.

    python bench/op_count.py                       # the default preset
    python bench/op_count.py --set conditional=on  # any TrainConfig field, as --set NAME=VALUE
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch.profiler import ProfilerActivity, profile

from digitgan.config import resolve
from digitgan.core.devices import speed_settings
from digitgan.data.sources import load_dataset
from digitgan.training.objective import Objective
from digitgan.training.state import TrainState
from digitgan.training.steps import Batches, prepare, update
from time_to_quality import parse_set  # bench/, beside this file

ITERATIONS = 16
# Operators that only make a view, read a host scalar or return their input: no kernel on a GPU. (An item() here
# reads Adam's step counts, which stay on the host under the optimizer's non-capturable default.)
NO_KERNEL = {"aten::" + name for name in (
    "detach", "view", "reshape", "_unsafe_view", "t", "transpose", "permute", "unsqueeze", "squeeze", "alias",
    "expand", "expand_as", "slice", "select", "view_as", "as_strided", "item", "to", "lift_fresh")}


def top_level(event) -> bool:
    """An ATen operator that no other ATen operator called (the autograd engine's nodes do not count as callers)."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return False
        parent = parent.cpu_parent
    return True


def count(overrides: dict[str, object]) -> dict[str, object]:
    cfg = resolve({"device": "cpu", "tensorboard": "off", **overrides})
    device = torch.device("cpu")
    speed = speed_settings(cfg, device)
    speed.apply()
    data = load_dataset(cfg.dataset, "train", cfg.data_dir, cfg.cache_dir, cfg.resolution, cfg.channels)
    counts = torch.bincount(data.labels, minlength=len(data.shape.classes)) if data.shape.classes else None
    batches = Batches(data, cfg, device, speed)
    state = TrainState(cfg, device, speed, len(data), data.shape, class_counts=counts)
    objective = Objective.of(cfg, state.augmenter, speed.autocast)
    G_step, D_step = prepare(state.G, state.D, speed)
    for _ in range(ITERATIONS):  # warm-up: the optimizers' state exists, a first R1 step has run
        update(state, G_step, D_step, batches, objective)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(ITERATIONS):
            update(state, G_step, D_step, batches, objective)
    ops = [e for e in prof.events() if e.name.startswith("aten::")]
    top = [e for e in ops if top_level(e)]
    common = collections.Counter(e.name for e in top).most_common(12)
    # a `to` that copies calls _to_copy inside it: it launches work, so it is not counted out
    launching = [e for e in top if e.name not in NO_KERNEL or any(c.name == "aten::_to_copy" for c in e.cpu_children)]
    return {"top_level": len(top) / ITERATIONS, "all": len(ops) / ITERATIONS, "launching": len(launching) / ITERATIONS,
            "commonest": [(name, n / ITERATIONS) for name, n in common]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a TrainConfig field")
    args = p.parse_args()
    torch.set_num_threads(1)
    result = count(parse_set(args.set))
    print(f"settings: {' '.join(args.set) or 'the default preset'}; torch {torch.__version__}; "
          f"{ITERATIONS} iterations profiled")
    print(f"top-level ATen operators per iteration: {result['top_level']:.1f} (with nested ones: {result['all']:.1f}); "
          f"of the top-level ones, {result['launching']:.1f} do work (not a view, a host scalar's read or a no-op)")
    print("commonest top-level, per iteration: " + ", ".join(f"{n} {c:g}" for n, c in result["commonest"]))


if __name__ == "__main__":
    main()
