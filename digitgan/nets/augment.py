"""Augmentation of every image D sees, real and generated alike, differentiable so G learns through it (Zhao et
al. 2020, DiffAugment: colour for RGB, translation by up to an eighth of the side, cutout of a square half the
side), and ADA's adaptive probability (Karras et al. 2020): each transform is applied to each image with
probability p, which rises while D is sure of the real images (r_t = E[sign D(x)] above ADA_TARGET) and falls
otherwise. Augmenting only the real images would leak the augmentation into G's pictures.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..core.devices import on

ADA_TARGET = 0.6  # the r_t ADA steers towards
ADA_INTERVAL = 4  # D steps between adjustments of p
ADA_IMAGES = 500_000  # p can move from 0 to 1 over this many real images


class Randoms:
    """Per-image random numbers from one stream, drawn for the whole global batch and then shared out (share: this
    process's rows), so that several processes augment their images exactly as one process augments the batch."""

    def __init__(self, gen: torch.Generator, total: int, share: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.gen, self.total, self.share = gen, total, share or (lambda rows: rows)

    def rand(self, *shape: int) -> torch.Tensor:
        """U(0, 1) of shape (this process's images, *shape)."""
        return self.share(torch.rand(self.total, *shape, generator=self.gen, device=self.gen.device))

    def randint(self, high: int, *shape: int) -> torch.Tensor:
        """Integers in [0, high) of shape (this process's images, *shape)."""
        return self.share(torch.randint(0, high, (self.total, *shape), generator=self.gen, device=self.gen.device))


def like(t: torch.Tensor, x: torch.Tensor, dtype: bool = False) -> torch.Tensor:
    """t on x's device (and with dtype, in x's dtype): itself where it is already (no operator)."""
    t = on(t, x.device)
    return t if not dtype or t.dtype == x.dtype else t.to(x.dtype)


def translate(x: torch.Tensor, max_shift: int, r: Randoms, fill: float = 0.0) -> torch.Tensor:
    """Each image moved by up to max_shift pixels each way (independently in y and x), the uncovered border
    filled with `fill`; differentiable in x."""
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=fill)
    dy, dx = (like(r.randint(2 * max_shift + 1), x) for _ in "yx")
    rows = (torch.arange(h, device=x.device) + dy[:, None])[:, :, None]  # (B, H, 1)
    cols = (torch.arange(w, device=x.device) + dx[:, None])[:, None, :]  # (B, 1, W)
    return padded[torch.arange(b, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)


def cutout(x: torch.Tensor, r: Randoms) -> torch.Tensor:
    """Each image with a square of half its side, at a random place (it may reach past the border), set to 0."""
    _, _, h, w = x.shape
    side = h // 2
    cy, cx = (like(r.randint(n + 1 - side % 2, 1, 1), x) - side // 2 for n in (h, w))
    ys, xs = torch.arange(h, device=x.device)[None, :, None], torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= cy) & (ys < cy + side) & (xs >= cx) & (xs < cx + side)  # (B, H, W)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def colour(x: torch.Tensor, r: Randoms) -> torch.Tensor:
    """Brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5), each image its own."""
    u = [like(r.rand(1, 1, 1), x, dtype=True) for _ in range(3)]  # each (B, 1, 1, 1)
    x = x + (u[0] - 0.5)
    grey = x.mean(1, keepdim=True)
    x = (x - grey) * (2 * u[1]) + grey
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * (u[2] + 0.5) + mean


def augment(
    x: torch.Tensor,
    p: torch.Tensor | float,
    gen: torch.Generator,
    share: Callable[[torch.Tensor], torch.Tensor] | None = None,
    total: int = 0,
) -> torch.Tensor:
    """DiffAugment's transforms (colour only for RGB), each applied to each image with probability p. x is this
    process's share of a global batch of `total` images (default: x is the whole batch)."""
    r = Randoms(gen, total or len(x), share)
    steps = ([colour] if x.shape[1] == 3 else []) + [
        lambda t, r: translate(t, max(1, round(t.shape[-1] / 8)), r),
        cutout,
    ]
    for transform in steps:
        chosen = (like(r.rand(1, 1, 1), x) < p).to(x.dtype)
        x = x + chosen * (transform(x, r) - x)
    return x.contiguous(memory_format=torch.channels_last) if x.is_contiguous(memory_format=torch.channels_last) else x


class Augmenter:
    """--augment's state: the random stream of the transforms and, for ada, p and the r_t tally since the last
    adjustment; all of it on the device (nothing read back) and in every checkpoint (a resume repeats)."""

    def __init__(
        self,
        mode: str,
        device: torch.device,
        seed: int,
        batch_size: int,
        share: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        # batch_size: the global batch; share: this process's rows of it (distributed.World.share)
        self.mode, self.batch_size, self.share = mode, batch_size, share
        self.gen = torch.Generator(device).manual_seed(seed)
        self.p = torch.tensor(1.0 if mode == "diff" else 0.0, device=device)
        self.tally = torch.zeros(2, device=device)  # (sum of sign D(x) over real images, how many)
        self.steps = 0
        self.speed = batch_size * ADA_INTERVAL / ADA_IMAGES  # how far p moves at an adjustment

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images if self.mode == "off" else augment(images, self.p, self.gen, self.share, self.batch_size)

    def observe(self, real_logits: torch.Tensor) -> None:
        """After a D step (ada): count D's verdicts on the real images, and every ADA_INTERVAL steps move p by
        sign(r_t - target) (summed over the processes under torchrun, so every process keeps the same p)."""
        if self.mode != "ada":
            return
        with torch.no_grad():
            self.tally += torch.stack(
                [real_logits.sign().sum(), torch.tensor(float(real_logits.numel()), device=self.tally.device)]
            )
        self.steps += 1
        if self.steps % ADA_INTERVAL == 0:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(self.tally)
            r_t = self.tally[0] / self.tally[1]
            self.p = (self.p + torch.sign(r_t - ADA_TARGET) * self.speed).clamp(0, 1)
            self.tally.zero_()

    def state_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "generator": self.gen.get_state(),
            "p": self.p.cpu(),
            "tally": self.tally.cpu(),
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the stream; and p with its tally when the run augmented the same way (another --augment on
        resume starts its own p)."""
        with contextlib.suppress(RuntimeError):  # saved by a generator on another kind of device: a new stream
            self.gen.set_state(state["generator"])
        if state["mode"] == self.mode:
            self.p, self.tally = state["p"].to(self.p.device), state["tally"].to(self.tally.device)
            self.steps = state["steps"]
