"""The training state: everything a checkpoint holds, in one object."""

from __future__ import annotations

import copy
import dataclasses
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import TrainConfig
from ..core.devices import Speed, on
from ..data.sampler import BatchSampler
from ..data.shape import GridLayout, Shape
from ..data.sources import augmentation
from ..errors import UsageError
from ..nets.augment import Augmenter
from ..nets.networks import build_models, count_batches, load_weights, sample_noise
from . import checkpoints
from .adam import Adam


class Averager:
    """An exponential moving average of a model's weights and buffers (Yazici et al. 2019: averaged GAN
    generators score markedly better). The decay warms up as min(decay, (1 + t) / (10 + t))."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model, self.decay = copy.deepcopy(model).eval().requires_grad_(False), decay
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values()))
        # Split once: floats are averaged, integer buffers (BatchNorm's batch counter) copied.
        self._avg = [a for a, _ in pairs if a.is_floating_point()]
        self._src = [p for a, p in pairs if a.is_floating_point()]
        self._copies = (
            [a for a, _ in pairs if not a.is_floating_point()],
            [p for a, p in pairs if not a.is_floating_point()],
        )

    @torch.no_grad()
    def update(self, step: int) -> None:
        torch._foreach_lerp_(self._avg, self._src, 1 - min(self.decay, (1 + step) / (10 + step)))

    @torch.no_grad()
    def copy_counters(self) -> None:
        """The integer buffers (batch norms' batch counters: nothing reads them but a checkpoint) as the model's
        now: copied when saved, not at every step."""
        if self._copies[0]:
            torch._foreach_copy_(*self._copies)


def lr_scale(cfg: TrainConfig, step: int) -> float:
    """The learning rates' factor at a step: 1, then linear to 0 over the last lr_decay of cfg.steps."""
    return min(1.0, (cfg.steps - step) / (cfg.lr_decay * cfg.steps)) if cfg.lr_decay else 1.0


def fixed_noise(cfg: TrainConfig, device: torch.device, layout: GridLayout) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The grid's fixed batch, laid out as the data's layout says: a z per image, or by class one row of z drawn as
    each class in turn (row c class c, column j the j-th z), with those labels."""
    labels = layout.labels()
    if labels is None:
        return sample_noise(cfg, layout.count, torch.Generator().manual_seed(cfg.seed), "cpu").to(device), None
    z = sample_noise(cfg, layout.cols, torch.Generator().manual_seed(cfg.seed), "cpu")
    return z.repeat(layout.rows, 1).to(device), labels.to(device)


class TrainState:
    """One run's networks, their Adam optimizers, the generator's weight average, the fixed noise, the batch
    sampler, the random streams, the step, the training time, the health counter and the best FID so far.

    state_dict() is exactly what a checkpoint holds. load_state_dict() restores it under this state's config, so
    the hyperparameters typed on a resume (learning rates, betas, --lr-decay, --ema, step counts, batch size)
    take effect from the resumed step on; the config's fields that a run is born with cannot change (config.py).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        device: torch.device,
        speed: Speed,
        num_images: int,
        shape: Shape,
        share: Callable[[torch.Tensor], torch.Tensor] = lambda batch: batch,
        fingerprint: str = "",
        held_out: int = 0,
        class_counts: torch.Tensor | None = None,
    ):
        # share: this process's rows of a global batch (distributed.World.share); the streams stay global.
        # shape, fingerprint, held_out, class_counts: the training data's (data.Dataset), which the networks are
        # built for
        self.cfg, self.device, self.share, self.shape = cfg, device, share, shape
        self.data = {"shape": shape.to_dict(), "images": num_images, "fingerprint": fingerprint, "held_out": held_out}
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)  # unused by training, but in every checkpoint: alike in runs started alike
        np.random.seed(cfg.seed)
        self.G, self.D = (m.to(device) for m in build_models(cfg, shape))
        speed.place(self.G, self.D)  # before the weight average copies G
        self.opt_g = Adam(self.G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
        self.opt_d = Adam(self.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
        self.ema = Averager(self.G, cfg.ema) if cfg.ema else None
        data_device = device if speed.data_on_device else torch.device("cpu")
        self.sampler = BatchSampler(num_images, cfg.batch_size, cfg.seed + 2, data_device)
        self.noise_device = device if speed.noise_on_device else torch.device("cpu")
        self.noise_gen = torch.Generator(self.noise_device).manual_seed(cfg.seed + 1)
        self.class_weights = self._fake_label_weights(class_counts)  # None: uniform
        self.layout = shape.grid(cfg.conditional == "on")
        self.fixed_z, self.fixed_y = fixed_noise(cfg, device, self.layout)
        self.augmenter = Augmenter(augmentation(cfg), device, cfg.seed + 3, cfg.batch_size, share)
        self.step, self.elapsed, self.d_won_steps = 0, 0.0, 0  # elapsed: seconds of training, all sessions
        self.best: dict[str, Any] | None = None  # {"step", "fid" or "kid", "features"}: the lowest so far (best.pt)

    @property
    def G_show(self) -> torch.nn.Module:
        """What grids and evaluations draw from: the weight average where there is one."""
        return self.ema.model if self.ema else self.G

    def batch(self) -> torch.Tensor:
        """The indices of this process's share of the next global batch of training images."""
        return self.share(self.sampler.next())

    def noise(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This process's share of a global batch of z, and for a conditional run of class labels (uniform, or
        with --fake-labels data in the training set's proportions), from the run's noise stream (so a resume draws
        the same ones), on the training device."""
        z = sample_noise(self.cfg, self.cfg.batch_size, self.noise_gen, self.noise_device)
        n, y = self.cfg.batch_size, None
        if self.cfg.conditional == "on" and self.class_weights is not None:
            y = torch.multinomial(self.class_weights, n, replacement=True, generator=self.noise_gen)
        elif self.cfg.conditional == "on":
            y = torch.randint(len(self.shape.classes), (n,), generator=self.noise_gen, device=self.noise_device)
        z, y = self.share(z), y if y is None else self.share(y)
        return on(z, self.device), y if y is None else on(y, self.device)

    def _fake_label_weights(self, class_counts: torch.Tensor | None) -> torch.Tensor | None:
        """How often G draws each class in training (--fake-labels): the training set's class counts, or None for
        uniform (also where the classes are balanced within a factor of two, under auto)."""
        mode = self.cfg.fake_labels
        if class_counts is None or mode == "uniform":
            return None
        if mode == "auto" and class_counts.max() <= 2 * class_counts.min():
            return None
        return class_counts.double().to(self.noise_device)

    def set_hyperparameters(self) -> None:
        """Put the config's learning rates (at this step's decay) and betas into both optimizers. A function of
        the config and the step alone: a resumed run follows the same schedule, and flags typed on resume rule."""
        scale = lr_scale(self.cfg, self.step)
        for opt, lr in ((self.opt_g, self.cfg.lr_g), (self.opt_d, self.cfg.lr_d)):
            for group in opt.param_groups:
                group["lr"], group["betas"] = lr * scale, (self.cfg.beta1, self.cfg.beta2)

    def _learned(self) -> dict[str, Any]:
        """The networks, the weight average and Adam's states: what training changes, and NaN could poison."""
        count_batches(self.G, self.D)  # the batch counters, counted on the host (networks.BatchNorm2d)
        if self.ema:
            self.ema.copy_counters()
        return dict(
            generator=self.G.state_dict(),
            **({"generator_ema": self.ema.model.state_dict()} if self.ema else {}),
            discriminator=self.D.state_dict(),
            opt_g=self.opt_g.state_dict(),
            opt_d=self.opt_d.state_dict(),
        )

    def state_dict(self) -> dict[str, Any]:
        return dict(
            step=self.step,
            config=dataclasses.asdict(self.cfg),
            data=self.data,
            **self._learned(),
            fixed_noise=self.fixed_z.cpu(),
            elapsed=self.elapsed,
            health={"d_won_steps": self.d_won_steps},
            best=self.best,
            augment=self.augmenter.state_dict(),
            rng={
                **checkpoints.capture_rng(),
                "noise": self.noise_gen.get_state(),
                "sampler": self.sampler.state_dict(),
            },
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.check_same_data(state.get("data"))
        load_weights(self.G, state["generator"])  # copies into the weights: channels_last survives
        load_weights(self.D, state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.ema:
            if "generator_ema" not in state:
                print(
                    "note: --ema is on from here: the weight average starts from the generator as it is now",
                    file=sys.stderr,
                )
            load_weights(self.ema.model, state.get("generator_ema", state["generator"]))
        elif "generator_ema" in state:
            print(
                "note: --ema 0: the weight average is dropped from here on (earlier checkpoints keep it)",
                file=sys.stderr,
            )
        self.fixed_z = state["fixed_noise"].to(self.device)
        try:
            self.noise_gen.set_state(state["rng"]["noise"])
        except RuntimeError:  # saved by a generator on another kind of device
            print("note: the noise stream restarts: it was saved on another kind of device", file=sys.stderr)
        self.sampler.load_state_dict(state["rng"]["sampler"])
        if "augment" in state:  # not in checkpoints from before --augment
            self.augmenter.load_state_dict(state["augment"])
        checkpoints.restore_rng(state["rng"])
        self.step, self.elapsed, self.d_won_steps = state["step"], state["elapsed"], state["health"]["d_won_steps"]
        self.best = state.get("best")  # as of the checkpoint's step: a best.pt from a lost stretch is outbid
        self.set_hyperparameters()

    def start_from(self, source: str) -> str:
        """This new run's networks (G, D and the weight average) as another run trained them, from its newest
        checkpoint or a checkpoint file; the optimizers, step, streams and data stay this run's. A run of the other
        kind of D gives G and its average alone (D starts fresh). Refused in one line where the networks' shapes
        differ. Returns what was taken, and from where."""
        where = init_source(source)
        found = checkpoints.load_latest(where) if where.is_dir() else (checkpoints.load(where), where)
        if found is None:
            raise UsageError(f"--init {source}: no checkpoint in that folder; pass a run directory or a .pt file")
        saved, path = found
        then = saved["config"]
        their_d = then.get("discriminator", "dcgan")
        same_d = their_d == self.cfg.discriminator
        parts = [("G", self.G, "generator")] + ([("D", self.D, "discriminator")] if same_d else [])
        for name, model, key in parts:
            ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            theirs = {k: tuple(v.shape) for k, v in saved[key].items()}
            if ours != theirs:
                raise UsageError(
                    f"--init {path}: its {name} does not fit this run's ({their_d} D, "
                    f"width {then['width']}, {then.get('resolution', 32)} px, conditional {then['conditional']} "
                    f"then; {self.cfg.discriminator} D, width {self.cfg.width}, {self.shape.resolution} px, "
                    f"conditional {self.cfg.conditional} now): start from a run of the same shapes"
                )
        for _, model, key in parts:  # every shape checked before any weight is loaded
            load_weights(model, saved[key])
        if self.ema:
            load_weights(self.ema.model, saved.get("generator_ema", saved["generator"]))
        return (
            f"the networks of {path}"
            if same_d
            else f"the G of {path} (its {their_d} D: this {self.cfg.discriminator} D starts fresh)"
        )

    def check_same_data(self, then: dict[str, Any] | None) -> None:
        """Refuse to resume on data other than the run began with (a checkpoint from before data were recorded
        passes)."""
        if not then or not then.get("fingerprint") or not self.data["fingerprint"]:
            return
        if then["fingerprint"] != self.data["fingerprint"]:
            count = (
                f"{then['images']} images then, {self.data['images']} now"
                if then["images"] != self.data["images"]
                else f"the same {then['images']} images, other pixels or labels"
            )
            raise UsageError(
                f"--dataset {self.cfg.dataset} is not the data this run began with ({count}; "
                f"fingerprint {then['fingerprint']} then, {self.data['fingerprint']} now): put the "
                f"data back as it was; or start a new run in another --checkpoint-dir, with --init "
                f"{self.cfg.checkpoint_dir} to go on from this run's weights on the new data"
            )

    def nonfinite(self) -> list[str]:
        """The parts of the state that hold NaN or inf (empty: it can be saved as a good checkpoint)."""
        return checkpoints.nonfinite(self._learned())


def init_source(source: str) -> Path:
    """--init's run directory or checkpoint file, refused in one line when it is not there."""
    where = Path(source).expanduser()
    if not where.exists():
        raise UsageError(f"--init {source}: no such run directory or checkpoint file; pass one of a trained run")
    return where
