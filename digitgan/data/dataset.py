"""A split of a source's pictures as training and evaluation read it: one (N, C, R, R) uint8 tensor, a quarter of
float32's memory, with the labels beside it; batches become float32 in [-1, 1] as they are drawn (to_float)."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from .shape import Shape

SUBSET_SEED = 2025  # --train-images' pick: the same images whatever the run's --seed


def to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1]: 0 (the background) -> -1, 255 -> 1."""
    return torch.div(pixels, 127.5).sub_(1.0)  # the division promotes to float32: no separate conversion


def as_images(batch: torch.Tensor) -> torch.Tensor:
    """A batch as float32 in [-1, 1]: uint8 pixels converted, images already float as they are. What takes a
    whole data set takes its uint8 pixels and converts a batch at a time."""
    return to_float(batch) if batch.dtype == torch.uint8 else batch


def fingerprint(pixels: np.ndarray, labels: np.ndarray, classes: Iterable[str]) -> str:
    """The data's identity: the SHA-256 of its frozen pixels, labels and class names (16 hex digits)."""
    h = hashlib.sha256(np.ascontiguousarray(pixels).data)
    h.update(fingerprint_tail(labels, classes))
    return h.hexdigest()[:16]


def fingerprint_tail(labels: np.ndarray, classes: Iterable[str]) -> bytes:
    """What a fingerprint hashes after the pixels: the labels and the class names (a cache being written hashes
    its pixels as they stream, then this)."""
    return np.ascontiguousarray(labels).tobytes() + "\0".join(classes).encode()


@dataclass
class Dataset:
    pixels: torch.Tensor  # (N, C, R, R) uint8
    labels: torch.Tensor  # (N,) int64
    name: str
    shape: Shape
    held_out: int = 0  # images of the same source kept out of this split: the emoji's and a folder's hold-out
    known_fingerprint: str = ""  # the fingerprint, where the source recorded it (a frozen cache): no pass to hash

    def __len__(self) -> int:
        return len(self.labels)

    @functools.cached_property
    def images(self) -> torch.Tensor:
        """All of them as (N, C, R, R) float32 in [-1, 1] (four times the memory: for evaluation, not training)."""
        return to_float(self.pixels)

    @functools.cached_property
    def fingerprint(self) -> str:
        """The data's identity, recorded in checkpoints: a resume on other data is refused."""
        return self.known_fingerprint or fingerprint(self.pixels.numpy(), self.labels.numpy(), self.shape.classes)

    def subset(self, n: int) -> Dataset:
        """n of its images (all of them for 0), drawn with a fixed seed and kept in their order; for n < 0 the
        others: all but the pick of -n, the images to pretrain on before fine-tuning on that pick (--init)."""
        if not n or n >= len(self):
            return self
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(SUBSET_SEED))
        pick = (order[:n] if n > 0 else order[-n:]).sort().values
        name = f"{self.name}-{n}" if n > 0 else f"{self.name}-but-{-n}"
        return Dataset(self.pixels[pick], self.labels[pick], name, self.shape, self.held_out)
