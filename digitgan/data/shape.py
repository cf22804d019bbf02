"""What the networks, and everything downstream of them, take from the data (Shape), and how a run's pictures of
samples are laid out (GridLayout)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

GRID_SIDE = 8  # an unconditional grid: 8 x 8 samples
GRID_CLASSES = 10  # a conditional grid: a row for each of the first 10 classes, 10 samples a row
GRID_PIXELS = 1024  # at most about this wide: fewer samples a row past 128 pixels (a grid file stays a few MB)


@dataclass(frozen=True)
class GridLayout:
    """How a run's pictures of samples are laid out (the fixed noise's grids, real.png, the style grid, the exported
    page): rows x cols images; by class, row r is drawn as class r and the columns share their noise."""

    rows: int
    cols: int
    by_class: bool

    @property
    def count(self) -> int:
        return self.rows * self.cols

    def labels(self) -> torch.Tensor | None:
        """The class of each image, row by row (None unless by class)."""
        return torch.arange(self.rows).repeat_interleave(self.cols) if self.by_class else None


@dataclass(frozen=True)
class Shape:
    """What the networks, and everything downstream of them, take from the data: the images' side and channels,
    and the class names by label (none for unlabelled data)."""

    resolution: int
    channels: int
    classes: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.resolution}x{self.resolution} {'RGB' if self.channels == 3 else 'grey'}"

    def to_dict(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "channels": self.channels, "classes": list(self.classes)}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Shape:
        return Shape(int(d["resolution"]), int(d["channels"]), tuple(d["classes"]))

    def grid(self, conditional: bool) -> GridLayout:
        """The layout of a run's grids: 8 x 8, or for a conditional run a row per class (the first 10) of 10; fewer
        a row where that would be wider than GRID_PIXELS (4 x 4 at 256 pixels)."""
        fits = max(4, GRID_PIXELS // self.resolution)
        if conditional and self.classes:
            return GridLayout(min(len(self.classes), GRID_CLASSES), min(GRID_CLASSES, fits), True)
        side = min(GRID_SIDE, fits)
        return GridLayout(side, side, False)
