"""The order training draws its batches in, kept whole in every checkpoint so that a resumed run draws the same ones."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UsageError


class BatchSampler:
    """Index batches drawn without replacement from a shuffled order, reshuffled each epoch (tail dropped).

    Its whole state (generator, order, position) goes into checkpoints so a resumed run draws the same batches.
    """

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device | str = "cpu"):
        if batch_size > n:
            raise UsageError(f"--batch-size {batch_size} is larger than the dataset ({n} images)")
        self.n, self.batch_size, self.device = n, batch_size, torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.order = self._shuffle()
        self.pos = 0
        self._cut()

    def _shuffle(self) -> torch.Tensor:
        # Drawn on the CPU (the same order on every device), moved once per epoch, not once per batch.
        return torch.randperm(self.n, generator=self.generator).to(self.device)

    def _cut(self) -> None:
        """The order's batches from pos on, as views made in one operator (not one slice a batch)."""
        self._start, self._batches = self.pos, self.order[self.pos :].split(self.batch_size)

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > self.n:
            self.order = self._shuffle()
            self.pos = 0
            self._cut()
        idx = self._batches[(self.pos - self._start) // self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": self.order.cpu(), "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.pos = state["order"].to(self.device), state["pos"]
        self._cut()
