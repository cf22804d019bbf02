"""What the update steps minimise, in the phases of stylegan2-ada-pytorch's loss: Dmain (D's loss on real and
generated images), Dreg (R1, the gradient penalty on real images, Mescheder et al. 2018, and R2, the same on
generated ones, as R3GAN pairs them; lazily every r1_every steps, weighted by r1_every, as StyleGAN2 does) and
Gmain (G's loss). The augmentation of everything D sees is the
objective's too: real and generated images alike, and R1's real images.

A loss is an entry of LOSSES, its D and G terms from D's logits; --loss takes its name (config.py's choices).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..core.devices import autocast
from ..nets.networks import call
from .distributed import unwrapped

Logits = torch.Tensor  # (B,), or (B, heads) from a D of several heads, each judged on its own


@functools.lru_cache(maxsize=16)
def _target(value: float, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A constant target for BCE, made once per logits' shape and device rather than at every step."""
    return torch.full(shape, value, device=device)


def bce_d(real: Logits, fake: Logits) -> torch.Tensor:
    """The non-saturating loss of Goodfellow et al. (D: real is 1, generated is 0)."""
    return F.binary_cross_entropy_with_logits(
        real, _target(1.0, tuple(real.shape), real.device)
    ) + F.binary_cross_entropy_with_logits(fake, _target(0.0, tuple(fake.shape), fake.device))


def bce_g(fake: Logits, real: Logits | None) -> torch.Tensor:
    """G maximises log D(G(z))."""
    return F.binary_cross_entropy_with_logits(fake, _target(1.0, tuple(fake.shape), fake.device))


def hinge_d(real: Logits, fake: Logits) -> torch.Tensor:
    """The hinge loss of Lim & Ye 2017 and Miyato et al. 2018."""
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def hinge_g(fake: Logits, real: Logits | None) -> torch.Tensor:
    return -fake.mean()


@dataclass(frozen=True)
class Loss:
    d: Callable[[Logits, Logits], torch.Tensor]  # (D's logits on real, on generated images) -> D's loss
    g: Callable[[Logits, Logits | None], torch.Tensor]  # (on generated, on real or None) -> G's loss
    g_sees_real: bool = False  # G's loss needs D's logits on real images too (a relativistic loss)


def rp_d(real: Logits, fake: Logits) -> torch.Tensor:
    """The relativistic pairing loss of R3GAN (Huang et al. 2024): each real image against the generated one
    beside it in the batch, D wants the real one's logit the higher."""
    return F.softplus(fake - real).mean()


def rp_g(fake: Logits, real: Logits | None) -> torch.Tensor:
    """G wants each generated image's logit above its real partner's."""
    assert real is not None  # g_sees_real: the step passes D's logits on the real batch
    return F.softplus(real - fake).mean()


LOSSES = {"bce": Loss(bce_d, bce_g), "hinge": Loss(hinge_d, hinge_g), "rpgan": Loss(rp_d, rp_g, g_sees_real=True)}


def as_float(x: torch.Tensor) -> torch.Tensor:
    """x in float32: itself when it is already (no operator), as under full precision it always is."""
    return x if x.dtype == torch.float32 else x.float()


def gradient_penalty(D: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """E[|grad_x D(x)|^2] over a batch (R1 on real images, R2 on generated ones), differentiable in D's weights
    (so its gradient trains D)."""
    images = images.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(as_float(D(images)).sum(), images, create_graph=True)
    return as_float(grad).square().sum((1, 2, 3)).mean()


@dataclass(frozen=True)
class Objective:
    """The loss, R1 with its lazy interval, the augmentation of all D sees, and the precision the phases' forward
    passes run in (None: full precision)."""

    loss: str = "bce"  # a key of LOSSES
    r1: float = 0.0  # R1's gamma (0: off)
    r1_every: int = 1  # the lazy penalties' interval, and their weight
    augment: Callable[[torch.Tensor], torch.Tensor] = field(default_factory=torch.nn.Identity)  # an Augmenter
    amp: torch.dtype | None = None
    r2: float = 0.0  # R2's gamma: the same penalty on generated images (0: off)

    @staticmethod
    def of(cfg: TrainConfig, augment: Callable[[torch.Tensor], torch.Tensor], amp: torch.dtype | None) -> Objective:
        return Objective(cfg.loss, cfg.r1, cfg.r1_every, augment, amp, cfg.r2)

    @property
    def terms(self) -> Loss:
        return LOSSES[self.loss]

    def reg_due(self, step: int) -> bool:
        """Whether the D step of this iteration adds the Dreg phase (R1 and R2 share the interval)."""
        return (self.r1 > 0 or self.r2 > 0) and step % self.r1_every == 0

    def d_main(
        self,
        D: torch.nn.Module,
        real: torch.Tensor,
        fake: torch.Tensor,
        y_real: torch.Tensor | None,
        y_fake: torch.Tensor | None,
    ) -> tuple[torch.Tensor, Logits, Logits]:
        """Dmain: (D's loss, its logits on the real images, on the generated ones)."""
        with autocast(real.device, self.amp):
            real_logits = as_float(self._seen(D, real, y_real))
            fake_logits = as_float(self._seen(D, fake, y_fake))
        return self.terms.d(real_logits, fake_logits), real_logits, fake_logits

    def d_reg(
        self,
        D: torch.nn.Module,
        real: torch.Tensor,
        y_real: torch.Tensor | None,
        fake: torch.Tensor | None = None,
        y_fake: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor], tuple[torch.Tensor, ...]]:
        """Dreg: (D's weights, the gradients of r1_every * (gamma1/2 * R1 + gamma2/2 * R2) in them; R2 on fake, the
        D step's generated images), taken through the eager D apart from the loss's (compiled graphs have no
        double backward); the update step adds them to the loss's and averages the sum over the processes."""
        eager = unwrapped(D)
        params: list[torch.Tensor] = [p for p in eager.parameters() if p.requires_grad]
        terms = [
            gamma / 2 * self.r1_every * gradient_penalty(functools.partial(self._seen, eager, y=y), images)
            for gamma, images, y in ((self.r1, real, y_real), (self.r2, fake, y_fake))
            if gamma > 0 and images is not None
        ]
        return params, torch.autograd.grad(sum(terms[1:], terms[0]), params)

    def _seen(self, D: torch.nn.Module, images: torch.Tensor, y: torch.Tensor | None) -> Logits:
        """D's logits on images as D sees them: augmented."""
        return call(D, self.augment(images), y)

    def g_main(
        self,
        D: torch.nn.Module,
        fake: torch.Tensor,
        y: torch.Tensor | None,
        real: torch.Tensor | None = None,
        y_real: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Gmain: G's loss on D's view of the generated images (and of real ones, for a loss that compares)."""
        with autocast(fake.device, self.amp):
            fake_logits = as_float(self._seen(D, fake, y))
            real_logits = as_float(self._seen(D, real, y_real)) if self.terms.g_sees_real and real is not None else None
        return self.terms.g(fake_logits, real_logits)
