"""What D and G minimise: the non-saturating BCE loss of Goodfellow et al. (the default) or the hinge loss (Lim &
Ye 2017, Miyato et al. 2018), and R1, the gradient penalty on real images (Mescheder et al. 2018), optionally
lazy: every k-th D step, weighted by k (as StyleGAN2 does)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def d_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor, ones: torch.Tensor | None = None,
           zeros: torch.Tensor | None = None) -> torch.Tensor:
    """D's loss (ones, zeros: BCE's targets, when the caller keeps them made)."""
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    ones = torch.ones_like(real_logits) if ones is None else ones
    zeros = torch.zeros_like(fake_logits) if zeros is None else zeros
    return F.binary_cross_entropy_with_logits(real_logits, ones) + F.binary_cross_entropy_with_logits(fake_logits, zeros)


def g_loss(kind: str, fake_logits: torch.Tensor, ones: torch.Tensor | None = None) -> torch.Tensor:
    """G's loss: the non-saturating BCE (ones: its targets, when the caller keeps them made), or hinge's."""
    if kind == "hinge":
        return -fake_logits.mean()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits) if ones is None else ones)


def r1_penalty(D: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """E[|grad_x D(x)|^2] over the real batch, differentiable in D's weights (so its gradient trains D)."""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(real).float().sum(), real, create_graph=True)
    return grad.float().square().sum((1, 2, 3)).mean()


def plain(module: torch.nn.Module) -> torch.nn.Module:
    """The eager module under DistributedDataParallel's and torch.compile's wrappers: R1's double backward runs
    through it (compiled graphs have no double backward, and DDP's hooks would average its gradients or not
    depending on what ran before; training.add_mean_over_processes averages them instead)."""
    while True:
        inner = getattr(module, "module", None) or getattr(module, "_orig_mod", None)
        if inner is None:
            return module
        module = inner
