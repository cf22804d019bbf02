"""Stacked MNIST (Metz et al. 2017; the mode-counting benchmark of VEEGAN, PacGAN and R3GAN): three MNIST digits
as the red, green and blue channels of one picture, so the data has 10 x 10 x 10 = 1,000 modes. Built from the
MNIST wheel with a fixed seeded pick of digits (the training split from MNIST's training digits, the test split
from its test digits); unlabelled as a GAN sees it, the mode (100 R + 10 G + B) kept as each picture's label for
the quality figures (modes, mode_kl), which read each channel with the shipped MNIST evaluator."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..errors import UsageError
from .dataset import Dataset
from .mnist import MNIST, PADDED, padded, resized
from .shape import Shape
from .source import Request, Source

SIZES = {"train": 60_000, "test": 10_000}  # stacked pictures a split holds
SEEDS = {"train": 3, "test": 4}  # which digits each split stacks: fixed, so every run sees the same pictures
MODES = 1000


def stack(images: np.ndarray, labels: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n pictures of three digits drawn at random (with replacement, seeded) as channels: ((n, 3, 28, 28) uint8,
    (n,) modes 100 * red + 10 * green + blue)."""
    pick = np.random.default_rng(seed).integers(0, len(images), size=(n, 3))
    digits = labels[pick]
    return images[pick], digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]


class StackedMNIST(Source):
    name = "stacked-mnist"
    title = "Stacked MNIST"
    max_resolution = 64
    resolution_note = " (28-pixel digits, padded to 32 and scaled up)"
    test_set = "test set"
    evaluator_shape = Shape(PADDED, 3)  # read a channel at a time by MNIST's evaluator

    @property
    def evaluator(self) -> str:
        return MNIST.name

    def _channels(self, channels: int) -> None:
        if channels == 1:
            raise UsageError("--dataset stacked-mnist is three digits in three colours: pass --channels 0 or 3, not 1")

    def load(self, split: str, resolution: int, channels: int, cache_dir: str, data_dir: str = "") -> Dataset:
        self._channels(channels)
        images, labels = MNIST.uint8(split, data_dir, cache_dir)
        stacked, modes = stack(images, labels, SIZES[split], SEEDS[split])
        n = len(stacked)
        pixels = resized(padded(stacked.reshape(n * 3, *stacked.shape[2:])), resolution).reshape(
            n, 3, resolution, resolution
        )
        return Dataset(pixels, torch.from_numpy(modes), f"{self.name}-{split}", Shape(resolution, 3))

    def sizes(self, asked: Request, say: Callable[[str], None]) -> tuple[int, int, tuple[str, ...]]:
        self._channels(asked.channels)
        return SIZES["train"], SIZES["train"], ()

    def prepare(self, asked: Request, say: Callable[[str], None]) -> None:
        MNIST.prepare(asked, say)
        self._channels(asked.channels)
        say(f"{self.name}: {SIZES['train']} training, {SIZES['test']} test pictures stacked from them, {MODES} modes")

    def known_shape(self, resolution: int, channels: int) -> Shape:
        self._channels(channels)
        return Shape(resolution, 3)

    def tag(self, resolution: int, channels: int, data: Dataset | None = None) -> str:
        return self.name if resolution == PADDED else f"{self.name}-{resolution}"


STACKED_MNIST = StackedMNIST()
