"""Augmentation of every image D sees, real and generated alike, differentiable so G learns through it (Zhao et
al. 2020, DiffAugment: colour for RGB, translation by up to an eighth of the side, cutout of a square half the
side), and ADA's adaptive probability (Karras et al. 2020): each transform is applied to each image with
probability p, which rises while D is sure of the real images (r_t = E[sign D(x)] above ADA_TARGET) and falls
otherwise. Augmenting only the real images would leak the augmentation into G's pictures.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

ADA_TARGET = 0.6  # the r_t ADA steers towards
ADA_INTERVAL = 4  # D steps between adjustments of p
ADA_IMAGES = 500_000  # p can move from 0 to 1 over this many real images


def translate(x: torch.Tensor, max_shift: int, gen: torch.Generator, fill: float = 0.0) -> torch.Tensor:
    """Each image moved by up to max_shift pixels each way (independently in y and x), the uncovered border
    filled with `fill`; differentiable in x."""
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=fill)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b), generator=gen, device=gen.device).to(x.device)
    rows = (torch.arange(h, device=x.device) + dy[:, None])[:, :, None]  # (B, H, 1)
    cols = (torch.arange(w, device=x.device) + dx[:, None])[:, None, :]  # (B, 1, W)
    return padded[torch.arange(b, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)


def cutout(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image with a square of half its side, at a random place (it may reach past the border), set to 0."""
    b, _, h, w = x.shape
    side = h // 2
    cy, cx = (torch.randint(0, n + 1 - side % 2, (b, 1, 1), generator=gen, device=gen.device).to(x.device) - side // 2
              for n in (h, w))
    ys, xs = torch.arange(h, device=x.device)[None, :, None], torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= cy) & (ys < cy + side) & (xs >= cx) & (xs < cx + side)  # (B, H, W)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def colour(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5), each image its own."""
    u = torch.rand(3, x.shape[0], 1, 1, 1, generator=gen, device=gen.device).to(x.device, x.dtype)
    x = x + (u[0] - 0.5)
    grey = x.mean(1, keepdim=True)
    x = (x - grey) * (2 * u[1]) + grey
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * (u[2] + 0.5) + mean


def augment(x: torch.Tensor, p: torch.Tensor | float, gen: torch.Generator) -> torch.Tensor:
    """DiffAugment's transforms (colour only for RGB), each applied to each image with probability p."""
    b = x.shape[0]
    steps = ([colour] if x.shape[1] == 3 else []) + [lambda t, g: translate(t, max(1, round(t.shape[-1] / 8)), g),
                                                     cutout]
    for transform in steps:
        chosen = (torch.rand(b, 1, 1, 1, generator=gen, device=gen.device).to(x.device) < p).to(x.dtype)
        x = x + chosen * (transform(x, gen) - x)
    return x.contiguous(memory_format=torch.channels_last) if x.is_contiguous(memory_format=torch.channels_last) else x


class Augmenter:
    """--augment's state: the random stream of the transforms and, for ada, p and the r_t tally since the last
    adjustment; all of it on the device (nothing read back) and in every checkpoint (a resume repeats)."""

    def __init__(self, mode: str, device: torch.device, seed: int, batch_size: int):
        self.mode = mode
        self.gen = torch.Generator(device).manual_seed(seed)
        self.p = torch.tensor(1.0 if mode == "diff" else 0.0, device=device)
        self.tally = torch.zeros(2, device=device)  # (sum of sign D(x) over real images, how many)
        self.steps = 0
        self.speed = batch_size * ADA_INTERVAL / ADA_IMAGES  # how far p moves at an adjustment

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images if self.mode == "off" else augment(images, self.p, self.gen)

    def observe(self, real_logits: torch.Tensor) -> None:
        """After a D step (ada): count D's verdicts on the real images, and every ADA_INTERVAL steps move p by
        sign(r_t - target) (summed over the processes under torchrun, so every process keeps the same p)."""
        if self.mode != "ada":
            return
        self.tally += torch.stack([real_logits.detach().float().sign().sum(), torch.tensor(float(len(real_logits)),
                                                                                          device=self.tally.device)])
        self.steps += 1
        if self.steps % ADA_INTERVAL == 0:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(self.tally)
            r_t = self.tally[0] / self.tally[1]
            self.p = (self.p + torch.sign(r_t - ADA_TARGET) * self.speed).clamp(0, 1)
            self.tally.zero_()

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "generator": self.gen.get_state(), "p": self.p.cpu(), "tally": self.tally.cpu(),
                "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the stream; and p with its tally when the run augmented the same way (another --augment on
        resume starts its own p)."""
        try:
            self.gen.set_state(state["generator"])
        except RuntimeError:  # saved by a generator on another kind of device
            pass
        if state["mode"] == self.mode:
            self.p, self.tally = state["p"].to(self.p.device), state["tally"].to(self.tally.device)
            self.steps = state["steps"]
