"""Generating images from a saved generator, deterministically for a given seed."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch

from . import checkpoints
from .config import MNIST_SHAPE, Shape, TrainConfig, resolve, saved_shape
from .devices import pick_device, speed_settings
from .errors import UsageError
from .files import atomic_write
from .images import save_grid
from .lock import trainer
from .models import bake_spectral_norm, build_models, call, fold_batchnorms, load_weights, sample_noise


def load_generator(checkpoint_dir: str = TrainConfig.checkpoint_dir, checkpoint: str | None = None,
                   device: str = "auto", best: bool = False, with_state: bool = False) -> tuple[Any, ...]:
    """(generator in eval mode, its config, its step) from a checkpoint file, a directory's best.pt (best), its
    newest checkpoint, or an exported generator.safetensors (with its generator.json beside it); with_state, the
    checkpoint's whole state as a fourth.

    The weight average is used where the checkpoint has one: it is what the run's grids and scores showed.
    """
    if best:
        if checkpoint:
            raise UsageError("--best and --checkpoint name two checkpoints: pass one of them")
        checkpoint = str(Path(checkpoint_dir) / "best.pt")
        if not Path(checkpoint).is_file():
            raise UsageError(f"--best: no best.pt in {checkpoint_dir}/: it is written when training tracks quality "
                             f"(--eval-every > 0, the default); pass --checkpoint-dir of such a run")
    if checkpoint and Path(checkpoint).suffix == ".safetensors":
        state = _exported_state(Path(checkpoint))
    elif checkpoint:
        if not Path(checkpoint).is_file():
            raise UsageError(f"--checkpoint {checkpoint} does not exist")
        try:
            state = checkpoints.load(checkpoint)
        except checkpoints.Unusable as e:
            raise UsageError(f"--checkpoint {checkpoint} cannot be used: {e}")
    else:
        found = checkpoints.load_latest(checkpoint_dir)
        if found is None:
            raise UsageError(f"no checkpoint in {checkpoint_dir}/: train first (`python dcgan.py`), or pass "
                             f"--checkpoint-dir or --checkpoint")
        state = found[0]
    if checkpoint is None or Path(checkpoint).suffix == ".pt":
        run_dir = Path(checkpoint).parent if checkpoint else Path(checkpoint_dir)
        if who := trainer(run_dir):
            print(f"note: {run_dir}/ is being trained right now ({who}): this uses "
                  f"{'its newest checkpoint' if not checkpoint else Path(checkpoint).name}, step {state['step']}",
                  file=sys.stderr)
    cfg = resolve({}, state["config"])
    generator, _ = build_models(cfg, saved_shape(state))
    load_weights(generator, state.get("generator_ema", state["generator"]))
    found = prepare_for_inference(generator, cfg, pick_device(device)), cfg, state["step"]
    return (*found, state) if with_state else found


def _exported_state(path: Path) -> dict[str, Any]:
    """An exported generator's weights (generator.safetensors) and what rebuilds it (generator.json beside it)."""
    info = path.with_suffix(".json")
    if not path.is_file() or not info.is_file():
        raise UsageError(f"--checkpoint {path}: an exported generator needs {path.name} and {info.name} side by "
                         f"side (python dcgan.py export writes both)")
    from safetensors.torch import load_file
    meta = json.loads(info.read_text())
    return {"generator": load_file(str(path)), "config": meta["config"], "step": meta["step"],
            **({"data": {"shape": meta["shape"]}} if "shape" in meta else {})}


def prepare_for_inference(generator: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """The generator on the device in eval mode, each BatchNorm folded into the convolution before it (the same
    function, one pass fewer over the activations), in channels_last where training would use it."""
    generator = fold_batchnorms(bake_spectral_norm(generator.to(device).eval()))
    if speed_settings(cfg, device).channels_last:
        generator.to(memory_format=torch.channels_last)
    return generator


def check_out_dir(path: Path) -> None:
    """--out must go into an existing directory that can be written to."""
    if not path.parent.is_dir():
        raise UsageError(f"--out {path}: the directory {path.parent}/ does not exist")
    try:
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as e:
        raise UsageError(f"--out {path}: cannot write in {path.parent}/ ({e.strerror}); pass another --out")


def class_labels(cfg: TrainConfig, num: int, cls: int | None = None, classes: int = 10) -> torch.Tensor | None:
    """The classes (of `classes`) a conditional model is asked to draw num images of: all `cls`, or without it a
    balanced set in class order (counts differ by at most one). None for an unconditional model."""
    if cfg.conditional != "on":
        return None
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
    raise UsageError(f"class {text}: {dataset} has the classes 0-{len(names) - 1}"
                     + (f" ({', '.join(names)})" if list(names) != [str(i) for i in range(len(names))] else ""))


@torch.inference_mode()
def draw(generator: torch.nn.Module, z: torch.Tensor, labels: torch.Tensor | None = None,
         batch: int = 1000) -> torch.Tensor:
    """The images generator draws from the noise z (and classes labels), on the CPU, batch at a time."""
    device = next(generator.parameters()).device
    ys = labels.split(batch) if labels is not None else [None] * len(z.split(batch))
    # cuDNN's fastest transposed convolutions add with atomics, so on CUDA a seed drew slightly different images
    # from one call to the next (the first GPU run): drawing takes only deterministic kernels, whatever training set
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=False, deterministic=True,
                                    allow_tf32=False):
        return torch.cat([call(generator, chunk.to(device), y if y is None else y.to(device)).float().cpu()
                          for chunk, y in zip(z.split(batch), ys)])


Classes = Union[int, str, Sequence[Union[int, str]], torch.Tensor, None]  # what a conditional model is asked to draw


class Generator:
    """A trained generator, ready to draw (what `digitgan.load` returns): the run's weight average where it kept
    one, in eval mode, batch norm folded. `module` is the torch module, `config` the run's TrainConfig, `step` the
    training step it is from, `shape` the data's (side, channels, class names). Images come back on the CPU as
    (N, channels, side, side) float32 in [-1, 1]."""

    def __init__(self, module: torch.nn.Module, config: TrainConfig, step: int, shape: Shape = MNIST_SHAPE):
        self.module, self.config, self.step, self.shape = module, config, step, shape

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
        """The (n,) labels for `classes`: one class (a label or a Fashion-MNIST name) for all, one per image (a
        sequence or a tensor of labels), or None, a balanced set in class order. None for an unconditional model, which cannot be asked for a class."""
        if not self.conditional:
            if classes is not None:
                raise UsageError(f"class {classes}: this checkpoint was trained without --conditional on, so it "
                                 f"cannot draw a chosen class; train one with --conditional on")
            return None
        if classes is None or isinstance(classes, (int, str)):
            return class_labels(self.config, n, None if classes is None else parse_class(classes, self.class_names, self.config.dataset),
                                len(self.class_names))
        if isinstance(classes, torch.Tensor):
            labels = classes.long().flatten()
            if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(self.class_names):
                raise UsageError(f"labels {int(labels.min())}-{int(labels.max())}: {self.config.dataset} has the "
                                 f"classes 0-{len(self.class_names) - 1}")
        else:
            labels = torch.tensor([parse_class(c, self.class_names, self.config.dataset) for c in classes], dtype=torch.long)
        if len(labels) != n:
            raise UsageError(f"{len(labels)} classes for {n} images: give one class, or one per image")
        return labels

    def draw(self, z: torch.Tensor, classes: Classes = None) -> torch.Tensor:
        """The images drawn from the noise z (N, z_dim), as the classes asked for (see labels)."""
        return draw(self.module, z, self.labels(len(z), classes))

    def sample(self, n: int, classes: Classes = None, seed: int = 0) -> torch.Tensor:
        """n images from the noise of seed (the same seed, the same images), as the classes asked for."""
        return self.draw(self.noise(n, seed), classes)


def _file_word(name: str) -> str:
    """A class name as part of a file name: letters, digits, - and _ only."""
    word = "".join(c if c.isalnum() or c in "-_" else " " for c in name)
    return "-".join(word.split()) or "class"


def samples_path(out: str) -> Path:
    """--out of `sample`: a .png grid, .npy images or .npz images and labels, in a directory we can write to; or a
    folder (a name ending in /, or an existing folder) for one PNG per image, new or empty, so nothing is
    overwritten."""
    path = Path(out)
    if out.endswith(("/", os.sep)) or path.is_dir():
        if path.is_dir() and any(path.iterdir()):
            raise UsageError(f"--out {out}: the folder is not empty; pass a new or empty folder, so that nothing "
                             f"in it is overwritten")
        check_out_dir(path / "x.png" if path.is_dir() else path)  # the folder, or the one it goes into
        return path
    if path.suffix not in (".png", ".npy", ".npz"):
        raise UsageError(f"--out {out}: the name must end in .png (a grid), .npy (raw images), .npz (images and "
                         f"labels) or / (a folder of one PNG per image)")
    check_out_dir(path)
    return path


def save_samples(path: Path, images: torch.Tensor, labels: torch.Tensor | None, nrow: int | None = None,
                 class_names: Sequence[str] = ()) -> Path:
    """A grid (.png, nrow images a row), the images (.npy), images and their classes (.npz: `images`,
    `labels`), or a folder of one PNG per image (00000.png, ...; 00000-<class>.png for a conditional model)."""
    if not path.suffix:
        path.mkdir(exist_ok=True)
        for i, image in enumerate(images):
            name = f"{i:05d}" + ("" if labels is None else "-" + _file_word(class_names[int(labels[i])]))
            save_grid(image[None], path / f"{name}.png", nrow=1, pad=0)
    elif path.suffix == ".png":
        save_grid(images, path, nrow=nrow)
    elif path.suffix == ".npy":
        atomic_write(path, lambda f: np.save(f, images.numpy()))
    else:
        arrays = {"images": images.numpy(), **({"labels": labels.numpy()} if labels is not None else {})}
        atomic_write(path, lambda f: np.savez(f, **arrays))
    return path
