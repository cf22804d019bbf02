"""Pictures: sample grids (PNG) and animations (GIF); the loss / metric curves are charts.py's."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .files import atomic_write


def grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> one uint8 image of rows x cols of them on a grey background: (rows*(H+pad)+pad,
    cols*(W+pad)+pad) for grey images, with a last axis of 3 for RGB ones."""
    n, channels, h, w = images.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    pixels = pixels.transpose(0, 2, 3, 1)  # (N, H, W, C)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, channels), 128, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = pixels[i]
    return out[..., 0] if channels == 1 else out


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, pad: int = 2) -> Path:
    path = Path(path)
    atomic_write(path, lambda f: Image.fromarray(grid(images, nrow, pad)).save(f, format="PNG"))
    return path


def captioned(image: np.ndarray, text: str, height: int = 16) -> np.ndarray:
    """A uint8 image (grey, or RGB on a last axis) with a black strip on top bearing text in white."""
    mode = "L" if image.ndim == 2 else "RGB"
    out = Image.new(mode, (image.shape[1], image.shape[0] + height), 0)
    out.paste(Image.fromarray(image), (0, height))
    ImageDraw.Draw(out).text(
        (4, 1), text, fill=255 if mode == "L" else (255, 255, 255), font=ImageFont.load_default(size=height - 4)
    )
    return np.asarray(out)


def save_gif(frames: Sequence[np.ndarray], path: str | Path, fps: float) -> Path:
    """An endlessly looping GIF of uint8 frames (grey or RGB, all one size), fps frames per second."""
    path = Path(path)
    ims = [Image.fromarray(f) for f in frames]
    atomic_write(
        path,
        lambda f: ims[0].save(
            f, format="GIF", save_all=True, append_images=ims[1:], duration=round(1000 / fps), loop=0
        ),
    )
    return path
