"""What a run needs before its first batch, built in one pass that reads top to bottom (start()): the config from the
flags, checked against the processes and the data before the disk is touched; the run directory's lock; the
checkpoint it resumes from, and the config it resumes under; then the device and its switches, the training set,
the state, the objective and the networks as the update steps call them. The loop (loop.py) holds only the loop."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig, resolve
from ..core.devices import Speed, fits_on, pick_device, speed_settings
from ..core.files import ensure_writable, sweep
from ..data.dataset import Dataset
from ..data.sources import check_images, load_dataset, source
from ..errors import UsageError
from . import checkpoints
from .distributed import World
from .lock import RunLock
from .objective import Objective
from .records import archive_run
from .state import TrainState, init_source
from .steps import Batches, prepare


@dataclass(frozen=True)
class Start:
    """A run ready for its first batch."""

    cfg: TrainConfig
    device: torch.device
    speed: Speed
    data: Dataset
    batches: Batches
    state: TrainState
    objective: Objective
    G_step: torch.nn.Module  # G and D as the update steps call them (compiled, synced under torchrun)
    D_step: torch.nn.Module
    last_ckpt: Path | None  # the checkpoint it resumed from


@dataclass(frozen=True)
class NothingToTrain:
    """A rerun of a run that has reached its steps or spent its time budget."""

    why: str
    last_ckpt: Path | None


@dataclass(frozen=True)
class Claim:
    """Rank 0's part of the set-up, handed to every process: the config, the checkpoint it resumes from and its
    path, and why there is nothing to train (or None)."""

    cfg: TrainConfig
    saved: dict[str, Any] | None
    last_ckpt: Path | None
    why: str | None = None


def start(overrides: dict[str, Any], fresh: bool, force: bool, world: World, lock: RunLock) -> Start | NothingToTrain:
    """The run the flags ask for, ready to train (rank 0 claims its directory while the others wait)."""
    claim = world.on_main(lambda: claim_run(overrides, fresh, force, world, lock))
    if claim.why:
        return NothingToTrain(claim.why, claim.last_ckpt)
    cfg = claim.cfg
    device = world.device(pick_device(cfg.device))
    speed = speed_settings(cfg, device)
    speed.apply()
    data = world.main_first(
        lambda: load_dataset(cfg.dataset, "train", cfg.data_dir, cfg.cache_dir, cfg.resolution, cfg.channels)
    ).subset(cfg.train_images)
    speed = fitted(speed, device, data, world)
    batches = Batches(data, cfg, device, speed)
    counts = torch.bincount(data.labels, minlength=len(data.shape.classes)) if data.shape.classes else None
    state = TrainState(cfg, device, speed, len(data), data.shape, world.share, data.fingerprint, data.held_out, counts)
    objective = Objective.of(cfg, state.augmenter, speed.autocast)
    if claim.saved:
        state.load_state_dict(claim.saved)
        if world.main:
            print(f"resuming from {claim.last_ckpt} (step {state.step} of {cfg.steps})", file=sys.stderr)
    elif cfg.init:
        origin = state.start_from(cfg.init)
        if world.main:
            print(f"starting from {origin} (fresh optimizers, step 0)", file=sys.stderr)
    G_step, D_step = prepare(state.G, state.D, speed, world)
    return Start(cfg, device, speed, data, batches, state, objective, G_step, D_step, claim.last_ckpt)


def claim_run(overrides: dict[str, Any], fresh: bool, force: bool, world: World, lock: RunLock) -> Claim:
    """The config the flags ask for, refused before anything is written if the processes cannot share its batch or
    its data cannot be trained on; then the run directory, made and locked before it is read (--fresh moves an
    earlier run aside); then the checkpoint it resumes from, whose config the flags go on top of."""
    # the run directory as the config records it, whatever config the run resumes under (it may have moved)
    overrides = {**overrides, "checkpoint_dir": str(Path(overrides.get("checkpoint_dir", TrainConfig.checkpoint_dir)))}
    asked = resolve(overrides)
    batch_is_asked = fresh or "batch_size" in overrides  # else a checkpoint's batch may rule
    if batch_is_asked:
        world.check_batch(asked.batch_size, asked.pack)
    if {"dataset", "train_images"} & overrides.keys():
        check_images(asked)
    elif "resolution" in overrides:
        source(asked.dataset, asked.resolution)  # a side its data do not reach: refused before the disk is touched
    if overrides.get("init"):
        init_source(asked.init)  # likewise a source that is not there
    run_dir = ensure_writable(asked.checkpoint_dir, "--checkpoint-dir")
    lock.acquire(run_dir)
    sweep(run_dir)  # what a trainer killed mid-write left
    if fresh:
        archive_run(run_dir, force)
    saved, last_ckpt = checkpoints.load_latest(run_dir, quarantine=True) or (None, None)
    if saved and "init" in overrides and overrides["init"] != saved["config"].get("init", ""):
        raise UsageError(
            f"--init: {run_dir} holds a run already (step {saved['step']}), which resumes as it is; pass --fresh "
            f"to start it over from {overrides['init']}, or another --checkpoint-dir"
        )
    cfg = asked if saved is None else resolve(overrides, saved["config"])
    if not batch_is_asked:
        world.check_batch(cfg.batch_size, cfg.pack)
    if saved and (why := nothing_to_train(cfg, saved, last_ckpt)):
        return Claim(cfg, saved, last_ckpt, why)
    ensure_writable(cfg.sample_dir, "--sample-dir")
    lock.name_holder()
    return Claim(cfg, saved, last_ckpt)


def nothing_to_train(cfg: TrainConfig, saved: dict[str, Any], path: Path | None) -> str | None:
    """Why a rerun has nothing to train (the steps are reached, or the time budget is spent), or None."""
    if saved["step"] >= cfg.steps:
        return f"nothing to train: {path} is at step {saved['step']} and --steps is {cfg.steps}; raise --steps to go on"
    if cfg.minutes and saved["elapsed"] >= 60 * cfg.minutes:
        return (
            f"the time budget of {cfg.minutes:g} minutes is spent ({saved['elapsed'] / 60:.2f} minutes trained, "
            f"up to step {saved['step']} in {path}); raise --minutes, or pass --minutes 0 for no limit"
        )
    return None


def fitted(speed: Speed, device: torch.device, data: Dataset, world: World) -> Speed:
    """The speed settings with the training set on the host instead of the device where it would take over half
    of the device's free memory."""
    if not speed.data_on_device or fits_on(device, data.pixels.nbytes):
        return speed
    if world.main:
        print(
            f"note: the training set ({data.pixels.nbytes / 1e9:.1f} GB) would take over half of {device}'s "
            f"free memory: each batch is copied over from the host instead (as --data-on-device off does)",
            file=sys.stderr,
        )
    return replace(speed, data_on_device=False)
