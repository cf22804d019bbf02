"""Latent walks: what a generator draws on the way from one noise vector to another (a smooth morph says it
learned a continuous space rather than a lookup table of training digits), and for a conditional model the
"style" grid, one fixed z per column drawn as every class."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..config import TrainConfig
from ..core.files import check_out_dir
from ..core.pictures import grid, save_gif, save_grid
from ..errors import UsageError
from ..nets.drawing import Generator


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from each row of a (N, Z) to the same row of b at the fractions t (T,): (N, T, Z).
    For Gaussian z it keeps the norm typical of the prior, where a straight line would pass through the
    low-norm middle that the generator never saw (White 2016, "Sampling generative networks")."""
    cos = (torch.nn.functional.normalize(a, dim=1) * torch.nn.functional.normalize(b, dim=1)).sum(1).clamp(-1, 1)
    omega = torch.arccos(cos)[:, None]  # (N, 1)
    t = t[None, :]  # (1, T)
    sin = torch.sin(omega)
    near = sin.abs() < 1e-6  # (anti)parallel ends: a straight line is as good
    wa = torch.where(near, 1 - t, torch.sin((1 - t) * omega) / torch.where(near, 1.0, sin))
    wb = torch.where(near, t, torch.sin(t * omega) / torch.where(near, 1.0, sin))
    return wa[..., None] * a[:, None, :] + wb[..., None] * b[:, None, :]


def walk(cfg: TrainConfig, a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The path between noise vectors for cfg's prior: spherical for normal z; straight for uniform z (the seed
    preset), which keeps it inside the cube [-1, 1]^d the generator was trained on."""
    if cfg.z_dist == "normal":
        return slerp(a, b, t)
    return (1 - t)[None, :, None] * a[:, None, :] + t[None, :, None] * b[:, None, :]


def interpolate(
    out: str, generator: Generator, rows: int = 8, steps: int = 10, seed: int = 0, fps: float = 20.0
) -> list[Path]:
    """rows walks of steps images each as a grid (out, one walk per row), the same walks as an animated GIF going
    there and back (out with .gif), and for a conditional model the style grid (out with _style.png). A
    conditional model's row r is drawn as class r mod the number of classes. Returns the files written."""
    path = check_walk(out, steps)
    cfg = generator.config
    ends = generator.noise(2 * rows, seed)
    classes = len(generator.class_names)
    labels = torch.arange(rows) % classes if generator.conditional else None

    def at(t: torch.Tensor) -> torch.Tensor:  # (rows * len(t), C, R, R), row-major by walk
        z = walk(cfg, ends[:rows], ends[rows:], t).reshape(-1, cfg.z_dim)
        return generator.draw(z, None if labels is None else labels.repeat_interleave(len(t)))

    written = [save_grid(at(torch.linspace(0, 1, steps)), path, nrow=steps)]
    frames = 4 * steps  # finer than the grid, so the GIF moves smoothly
    moving = at(torch.linspace(0, 1, frames)).unflatten(0, (rows, frames))  # (rows, frames, C, R, R)
    cols = math.ceil(math.sqrt(rows))
    pictures = [grid(moving[:, i], nrow=cols) for i in range(frames)]
    written.append(save_gif(pictures + pictures[-2:0:-1], path.with_suffix(".gif"), fps))
    if labels is not None:  # the style grid: a row per class as the grids have them, the same z in each column
        layout = generator.shape.grid(conditional=True)
        z = generator.noise(layout.cols, seed)
        written.append(
            save_grid(
                generator.draw(z.repeat(layout.rows, 1), layout.labels()),
                path.with_name(path.stem + "_style.png"),
                nrow=layout.cols,
            )
        )
    return written


def check_walk(out: str, steps: int) -> Path:
    """interpolate's --out (a .png in a directory we can write to) as a path, once --steps is known to be valid."""
    path = Path(out)
    if path.suffix != ".png":
        raise UsageError(f"--out {out}: the name must end in .png (the GIF and style grid go beside it)")
    check_out_dir(path)
    if steps < 2:
        raise UsageError(f"--steps must be at least 2 (the two ends), not {steps}")
    return path
