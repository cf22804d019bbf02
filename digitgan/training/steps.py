"""The update steps: one discriminator step (Dmain, and Dreg when due), one generator step (Gmain), an iteration of
both with the weight average, and what the steps need around them: the networks as the steps call them (prepare),
batches of training images (Batches), and the values a CSV row averages (Meter)."""

from __future__ import annotations

import functools
from typing import cast

import torch

from ..config import TrainConfig
from ..core.devices import Speed, autocast, on
from ..data.cache import CHUNK
from ..data.dataset import Dataset, to_float
from ..nets.networks import call
from .adam import Adam
from .distributed import World, mean_over_processes, synced
from .objective import Objective
from .records import METERED
from .state import TrainState


def d_update(
    G: torch.nn.Module,
    D: torch.nn.Module,
    opt: Adam,
    real: torch.Tensor,
    z: torch.Tensor,
    objective: Objective,
    y_real: torch.Tensor | None = None,
    y_fake: torch.Tensor | None = None,
    reg: bool = False,
) -> tuple[torch.Tensor, ...]:
    """One discriminator step on real images and G's images of z (labels: a conditional run's; reg: this step adds
    Dreg); returns (loss, logits on real, logits on generated, the gradient's norm), all on the device."""
    with autocast(real.device, objective.amp), torch.no_grad():
        fake = call(G, z, y_fake)
    loss, real_logits, fake_logits = objective.d_main(D, real, fake, y_real, y_fake)
    penalty = objective.d_reg(D, real, y_real, fake, y_fake) if reg else None
    params = trained(D)
    grads = gradients(loss, params)
    if penalty is not None:
        torch._foreach_add_(grads, list(penalty[1]))
    set_gradients(params, grads)
    mean_over_processes(D)
    norm = gradient_norm(D)
    opt.step()
    return loss, real_logits, fake_logits, norm


def g_update(
    G: torch.nn.Module,
    D: torch.nn.Module,
    opt: Adam,
    z: torch.Tensor,
    objective: Objective,
    y: torch.Tensor | None = None,
    real: torch.Tensor | None = None,
    y_real: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One generator step (Gmain; real: images for a loss that compares with them); returns (loss, the gradient's
    norm) on the device. The gradient is taken in G's weights alone: D's, a third of D's backward, are never
    computed."""
    with autocast(z.device, objective.amp):
        fake = call(G, z, y)
    loss = objective.g_main(D, fake, y, real, y_real)
    params = trained(G)
    set_gradients(params, gradients(loss, params))
    mean_over_processes(G)
    norm = gradient_norm(G)
    opt.step()
    return loss, norm


def trained(model: torch.nn.Module) -> list[torch.Tensor]:
    """The weights a step trains."""
    return [p for p in model.parameters() if p.requires_grad]


def gradients(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """The loss's gradient in each of params (None for one it does not depend on), straight from the autograd
    engine: the values loss.backward() would leave in .grad, without its detach of each one on the way in."""
    return list(torch.autograd.grad(loss, params, _one(loss.device, loss.dtype), allow_unused=True))


@functools.lru_cache(maxsize=8)
def _one(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The gradient a backward pass starts from, made once rather than at every step."""
    return torch.ones((), device=device, dtype=dtype)


def set_gradients(params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    """Each parameter's .grad (what the processes' mean, the norm and Adam read): replaced, never added to, and in
    the parameter's memory layout, as loss.backward() leaves it (the layout orders the sum a gradient's norm takes)."""
    for p, g in zip(params, grads):
        p.grad = g if g is None or same_layout(g, p) else laid_out_as(g, p)


def same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors of one shape lie alike in memory (the strides of dimensions longer than one)."""
    return all(x == y for x, y, n in zip(a.stride(), b.stride(), a.shape) if n > 1)


def laid_out_as(g: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """g's values in p's memory layout."""
    if p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last):
        return g.contiguous(memory_format=torch.channels_last)
    return torch.empty_strided(p.shape, p.stride(), dtype=g.dtype, device=g.device).copy_(g)


def gradient_norm(model: torch.nn.Module) -> torch.Tensor:
    """The L2 norm of all of model's gradients together, left on the device (read back with the losses): the norm
    of the tensors' norms, as torch.nn.utils.get_total_norm takes it, without its per-tensor detach and move
    (a third of an iteration's operators)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def prepare(
    G: torch.nn.Module, D: torch.nn.Module, speed: Speed, world: World | None = None
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The (G, D) the update steps call: compiled when asked; under torchrun, G and D first get global batch norm
    and rank 0's weights (synced). The state stays in G and D (already in channels_last where the speed settings
    ask for it: TrainState puts them there)."""
    if world is not None and world.group:
        for model in (G, D):
            synced(model)
    compiled = lambda m: cast(torch.nn.Module, torch.compile(m))  # a module still, for unwrapped()
    return (compiled(G), compiled(D)) if speed.compile else (G, D)


def copied(pixels: torch.Tensor, device: torch.device, chunk_bytes: int = CHUNK) -> torch.Tensor:
    """A copy of pixels on device, chunk_bytes at a time: a mapped training set reaches the device a piece at a
    time from its file, never as a second whole copy in host memory."""
    out = torch.empty(pixels.shape, dtype=pixels.dtype, device=device)
    rows = max(1, chunk_bytes // max(1, pixels[:1].nbytes))
    for start in range(0, len(pixels), rows):
        out[start : start + rows].copy_(pixels[start : start + rows])
    return out


class Batches:
    """The training set where batches are drawn from (the device, or the CPU with --data-on-device off) as uint8,
    a quarter of float32's memory; on the CPU the mapped cache itself, gathered from a batch at a time."""

    def __init__(self, data: Dataset, cfg: TrainConfig, device: torch.device, speed: Speed):
        on_host = not speed.data_on_device or device.type == "cpu"
        self.pixels = data.pixels if on_host else copied(data.pixels, device)
        self.labels = data.labels if on_host else data.labels.to(device)
        self.device, self.conditional, self.channels_last = device, cfg.conditional == "on", speed.channels_last

    def __call__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The images at idx on the training device, float32 in [-1, 1], with their labels for a conditional run."""
        real = to_float(on(self.pixels[idx], self.device))
        if self.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        return real, on(self.labels[idx], self.device) if self.conditional else None


def update(
    state: TrainState, G_step: torch.nn.Module, D_step: torch.nn.Module, batches: Batches, objective: Objective
) -> list[torch.Tensor]:
    """One iteration: cfg.d_steps discriminator updates, cfg.g_steps generator updates, the weight average. Returns
    what a CSV row averages (METERED: the last updates' losses, D's mean outputs on real and generated images (under
    rpgan, on each against its partner), the gradient norms, the augmentation's p), on the device: nothing is read
    back here."""
    cfg = state.cfg
    state.set_hyperparameters()
    reg = objective.reg_due(state.step)
    for _ in range(cfg.d_steps):
        real, y_real = batches(state.batch())
        z, y_fake = state.noise()
        loss_d, real_logits, fake_logits, d_norm = d_update(
            G_step, D_step, state.opt_d, real, z, objective, y_real, y_fake, reg
        )
        if objective.terms.g_sees_real:  # a relativistic D's logit means something only against its partner's
            real_logits, fake_logits = real_logits - fake_logits, fake_logits - real_logits
        state.augmenter.observe(real_logits)
    for _ in range(cfg.g_steps):
        z, y_fake = state.noise()
        loss_g, g_norm = g_update(G_step, D_step, state.opt_g, z, objective, y_fake, real, y_real)
    if state.ema:
        state.ema.update(state.step)
    state.step += 1
    with torch.no_grad():
        d_real, d_fake = real_logits.sigmoid().mean(), fake_logits.sigmoid().mean()
    return [loss_d, loss_g, d_real, d_fake, d_norm, g_norm, state.augmenter.p]


class Meter:
    """The values update() returns, summed on the device and read back (averaged over the steps since the last
    read, and over the processes) only when a CSV row is due: the loop's one host sync."""

    def __init__(self, device: torch.device):
        self.sums, self.count = list(torch.zeros(len(METERED), device=device).unbind()), 0

    @torch.no_grad()  # the losses are added without their graphs
    def add(self, values: list[torch.Tensor]) -> None:
        torch._foreach_add_(self.sums, values)  # one operator, whatever the number of values
        self.count += 1

    def read(self, world: World) -> tuple[list[float], int]:
        """(the means, how many steps they cover), and a fresh start."""
        means = world.mean(torch.stack(self.sums) / self.count).tolist()
        torch._foreach_zero_(self.sums)
        count, self.count = self.count, 0
        return means, count
