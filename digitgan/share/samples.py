"""A trained generator loaded from a run (its newest checkpoint, best.pt, one checkpoint file, or an exported
generator.safetensors), and samples written as a grid, arrays or a folder of pictures."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import TrainConfig, resolve
from ..core.devices import pick_device
from ..core.files import atomic_write, check_out_dir
from ..core.pictures import save_grid
from ..data.sources import saved_shape
from ..errors import UsageError
from ..nets.drawing import prepare_for_inference
from ..nets.networks import build_generator, load_weights
from ..training import checkpoints
from ..training.lock import trainer


def load_generator(
    checkpoint_dir: str = TrainConfig.checkpoint_dir,
    checkpoint: str | None = None,
    device: str = "auto",
    best: bool = False,
    with_state: bool = False,
) -> tuple[Any, ...]:
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
            raise UsageError(
                f"--best: no best.pt in {checkpoint_dir}/: it is written when training tracks quality "
                f"(--eval-every > 0, the default); pass --checkpoint-dir of such a run"
            )
    if checkpoint and Path(checkpoint).suffix == ".safetensors":
        state = _exported_state(Path(checkpoint))
    elif checkpoint:
        if not Path(checkpoint).is_file():
            raise UsageError(f"--checkpoint {checkpoint} does not exist")
        try:
            state = checkpoints.load(checkpoint)
        except checkpoints.Unusable as e:
            raise UsageError(f"--checkpoint {checkpoint} cannot be used: {e}") from None
    else:
        found = checkpoints.load_latest(checkpoint_dir)
        if found is None:
            raise UsageError(
                f"no checkpoint in {checkpoint_dir}/: train first (`python dcgan.py`), or pass "
                f"--checkpoint-dir or --checkpoint"
            )
        state = found[0]
    if checkpoint is None or Path(checkpoint).suffix == ".pt":
        run_dir = Path(checkpoint).parent if checkpoint else Path(checkpoint_dir)
        if who := trainer(run_dir):
            print(
                f"note: {run_dir}/ is being trained right now ({who}): this uses "
                f"{'its newest checkpoint' if not checkpoint else Path(checkpoint).name}, step {state['step']}",
                file=sys.stderr,
            )
    cfg = resolve({}, state["config"])
    generator = build_generator(cfg, saved_shape(state))
    load_weights(generator, state.get("generator_ema", state["generator"]))
    loaded = prepare_for_inference(generator, cfg, pick_device(device)), cfg, state["step"]
    return (*loaded, state) if with_state else loaded


def _exported_state(path: Path) -> dict[str, Any]:
    """An exported generator's weights (generator.safetensors) and what rebuilds it (generator.json beside it)."""
    info = path.with_suffix(".json")
    if not path.is_file() or not info.is_file():
        raise UsageError(
            f"--checkpoint {path}: an exported generator needs {path.name} and {info.name} side by "
            f"side (python dcgan.py export writes both)"
        )
    from safetensors.torch import load_file

    meta = json.loads(info.read_text())
    return {
        "generator": load_file(str(path)),
        "config": meta["config"],
        "step": meta["step"],
        **({"data": {"shape": meta["shape"]}} if "shape" in meta else {}),
    }


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
            raise UsageError(
                f"--out {out}: the folder is not empty; pass a new or empty folder, so that nothing "
                f"in it is overwritten"
            )
        check_out_dir(path / "x.png" if path.is_dir() else path)  # the folder, or the one it goes into
        return path
    if path.suffix not in (".png", ".npy", ".npz"):
        raise UsageError(
            f"--out {out}: the name must end in .png (a grid), .npy (raw images), .npz (images and "
            f"labels) or / (a folder of one PNG per image)"
        )
    check_out_dir(path)
    return path


def save_samples(
    path: Path,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    nrow: int | None = None,
    class_names: Sequence[str] = (),
) -> Path:
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
        atomic_write(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]  # numpy's stubs
    return path
