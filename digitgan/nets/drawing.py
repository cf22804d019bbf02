"""A trained generator ready to draw (Generator: what `digitgan.load` returns, what evaluations score), drawing
deterministically for a given seed, and the inference copy it draws with: eval mode, batch norm folded."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..config import TrainConfig
from ..core.devices import speed_settings
from ..data.shape import Shape
from ..data.sources import known_shape
from ..errors import UsageError
from .convs import fold_batchnorms
from .networks import bake_spectral_norm, call, sample_noise


def prepare_for_inference(generator: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """The generator on the device in eval mode, each BatchNorm folded into the convolution before it (the same
    function, one pass fewer over the activations), in channels_last where training would use it."""
    generator = fold_batchnorms(bake_spectral_norm(generator.to(device).eval()))
    speed_settings(cfg, device).place(generator)
    return generator


def class_labels(cfg: TrainConfig, num: int, cls: int | None = None, classes: int = 0) -> torch.Tensor | None:
    """The classes (of `classes`; 0: as many as the config's dataset is known to have) a conditional model is asked
    to draw num images of: all `cls`, or without it a balanced set in class order (counts differ by at most one).
    None for an unconditional model."""
    if cfg.conditional != "on":
        return None
    classes = classes or len(known_shape(cfg).classes)
    return torch.full((num,), cls) if cls is not None else torch.arange(num) * classes // num


def parse_class(text: str | int, names: Sequence[str], dataset: str) -> int:
    """A class by its label (7, "7") or its name ("sneaker", "ankle-boot", "Smileys & Emotion", ...; case,
    spaces, dashes and underscores aside)."""
    norm = lambda t: str(t).strip().lower().replace("_", "-").replace(" ", "-")
    key = norm(text)
    if key.isdigit() and int(key) < len(names):
        return int(key)
    if key in map(norm, names):
        return list(map(norm, names)).index(key)
    raise UsageError(
        f"class {text}: {dataset} has the classes 0-{len(names) - 1}"
        + (f" ({', '.join(names)})" if list(names) != [str(i) for i in range(len(names))] else "")
    )


@torch.inference_mode()
def draw(
    generator: torch.nn.Module, z: torch.Tensor, labels: torch.Tensor | None = None, batch: int = 1000
) -> torch.Tensor:
    """The images generator draws from the noise z (and classes labels), on the CPU, batch at a time."""
    device = next(generator.parameters()).device
    ys = labels.split(batch) if labels is not None else [None] * len(z.split(batch))
    # cuDNN's fastest transposed convolutions add with atomics, so on CUDA a seed drew slightly different images
    # from one call to the next (the first GPU run): drawing takes only deterministic kernels, whatever training set
    with torch.backends.cudnn.flags(
        enabled=torch.backends.cudnn.enabled, benchmark=False, deterministic=True, allow_tf32=False
    ):
        return torch.cat(
            [
                call(generator, chunk.to(device), y if y is None else y.to(device)).float().cpu()
                for chunk, y in zip(z.split(batch), ys)
            ]
        )


Classes = int | str | Sequence[int | str] | torch.Tensor | None  # what a conditional model is asked to draw


class Generator:
    """A trained generator, ready to draw (what `digitgan.load` returns): the run's weight average where it kept
    one, in eval mode, batch norm folded. `module` is the torch module, `config` the run's TrainConfig, `step` the
    training step it is from, `shape` the data's (side, channels, class names). Images come back on the CPU as
    (N, channels, side, side) float32 in [-1, 1]."""

    def __init__(self, module: torch.nn.Module, config: TrainConfig, step: int, shape: Shape | None = None):
        # shape: the data's (default: what the config's dataset is known to have without loading it)
        self.module, self.config, self.step, self.shape = module, config, step, shape or known_shape(config)

    @property
    def conditional(self) -> bool:
        return self.config.conditional == "on"

    @property
    def class_names(self) -> tuple[str, ...]:
        """The names of the classes a conditional model draws, by label."""
        return self.shape.classes

    def noise(self, n: int, seed: int = 0) -> torch.Tensor:
        """n noise vectors from the model's prior, drawn on the CPU (the same z on any device) from seed."""
        return sample_noise(self.config, n, torch.Generator().manual_seed(seed), "cpu")

    def labels(self, n: int, classes: Classes = None) -> torch.Tensor | None:
        """The (n,) labels for `classes`: one class (a label or a name, "sneaker") for all, one per picture (a
        sequence or a tensor of labels), or None, a balanced set in class order. None for an unconditional model,
        which cannot be asked for a class."""
        if not self.conditional:
            if classes is not None:
                raise UsageError(
                    f"class {classes}: this checkpoint was trained without --conditional on, so it "
                    f"cannot draw a chosen class; train one with --conditional on"
                )
            return None
        if classes is None or isinstance(classes, (int, str)):
            return class_labels(
                self.config,
                n,
                None if classes is None else parse_class(classes, self.class_names, self.config.dataset),
                len(self.class_names),
            )
        if isinstance(classes, torch.Tensor):
            labels = classes.long().flatten()
            if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(self.class_names):
                raise UsageError(
                    f"labels {int(labels.min())}-{int(labels.max())}: {self.config.dataset} has the "
                    f"classes 0-{len(self.class_names) - 1}"
                )
        else:
            labels = torch.tensor(
                [parse_class(c, self.class_names, self.config.dataset) for c in classes], dtype=torch.long
            )
        if len(labels) != n:
            raise UsageError(f"{len(labels)} classes for {n} images: give one class, or one per image")
        return labels

    def draw(self, z: torch.Tensor, classes: Classes = None) -> torch.Tensor:
        """The images drawn from the noise z (N, z_dim), as the classes asked for (see labels)."""
        return draw(self.module, z, self.labels(len(z), classes))

    def sample(self, n: int, classes: Classes = None, seed: int = 0) -> torch.Tensor:
        """n images from the noise of seed (the same seed, the same images), as the classes asked for."""
        return self.draw(self.noise(n, seed), classes)
