"""Generating images from a saved generator, deterministically for a given seed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import checkpoints
from .config import TrainConfig, resolve
from .devices import pick_device, speed_settings
from .errors import UsageError
from .images import save_grid
from .models import build_models, sample_noise


def load_generator(checkpoint_dir: str, checkpoint: str | None = None,
                   device: str = "auto") -> tuple[torch.nn.Module, TrainConfig, int]:
    """(generator in eval mode, its config, its step) from a checkpoint file or a directory's newest one.

    The weight average is used where the checkpoint has one: it is what the run's grids and scores showed.
    """
    if checkpoint:
        if not Path(checkpoint).is_file():
            raise UsageError(f"--checkpoint {checkpoint} does not exist")
        try:
            state = checkpoints.load(checkpoint)
        except ValueError as e:
            raise UsageError(f"--checkpoint {checkpoint} cannot be used: {e}")
    else:
        found = checkpoints.load_latest(checkpoint_dir)
        if found is None:
            raise UsageError(f"no checkpoint in {checkpoint_dir}/: train first (`python dcgan.py`), or pass "
                             f"--checkpoint-dir or --checkpoint")
        state = found[0]
    cfg = resolve({}, state["config"])
    generator, _ = build_models(cfg)
    generator.load_state_dict(state.get("generator_ema", state["generator"]))
    dev = pick_device(device)
    generator = generator.to(dev).eval()
    if speed_settings(cfg, dev).channels_last:
        generator.to(memory_format=torch.channels_last)
    return generator, cfg, state["step"]


@torch.no_grad()
def generate(generator: torch.nn.Module, cfg: TrainConfig, num: int, seed: int, batch: int = 1000) -> torch.Tensor:
    """(num, 1, 32, 32) images in [-1, 1] on the CPU; noise is drawn on the CPU so any device gives the same z."""
    device = next(generator.parameters()).device
    z = sample_noise(cfg, num, torch.Generator().manual_seed(seed), "cpu")
    return torch.cat([generator(chunk.to(device)).float().cpu() for chunk in z.split(batch)])


def write_samples(out: str, num: int, seed: int, checkpoint_dir: str, checkpoint: str | None = None,
                  device: str = "auto") -> Path:
    path = Path(out)
    if path.suffix not in (".png", ".npy"):
        raise UsageError(f"--out {out}: the name must end in .png (a grid) or .npy (raw arrays)")
    if not path.parent.is_dir():
        raise UsageError(f"--out {out}: the directory {path.parent}/ does not exist")
    generator, cfg, _ = load_generator(checkpoint_dir, checkpoint, device)
    images = generate(generator, cfg, num, seed)
    if path.suffix == ".png":
        save_grid(images, path)
    else:
        checkpoints.atomic_write(path, lambda f: np.save(f, images.numpy()))
    return path
