"""The Python API, which the command line is a thin layer over: train, load, evaluate.

import digitgan
run = digitgan.train(steps=300, checkpoint_dir="runs/a/ck", sample_dir="runs/a/samples")
G = digitgan.load(run)                      # or a run directory, a checkpoint file, an exported .safetensors
images = G.sample(16, seed=0)               # (16, C, R, R) in [-1, 1]: (16, 1, 32, 32) for MNIST; classes=7
scores = digitgan.evaluate(run, num=2000)   # FID, KID, precision, ..., and "real_reference" beside them
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any

from .config import TrainConfig, resolve
from .data.sources import saved_shape
from .errors import UsageError
from .nets.drawing import Generator
from .share.samples import load_generator
from .training import checkpoints
from .training.records import grids, read_record, read_rows


@dataclasses.dataclass(frozen=True)
class Run:
    """A run on disk: its directory (CHECKPOINT_DIR: checkpoints, config.json, metrics.csv, best.pt, ...). Pass it
    wherever a run directory goes (it is path-like): load(run), evaluate(run)."""

    dir: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "dir", Path(self.dir))  # Run("checkpoints") as well as Run(Path(...))

    def __fspath__(self) -> str:
        return str(self.dir)

    @functools.cached_property
    def config(self) -> TrainConfig:
        """The settings its latest session trained with (config.json)."""
        saved = read_record(self.dir / "config.json")
        if saved is None:
            raise UsageError(f"{self.dir}/ holds no run (no config.json): train into it first")
        return resolve({}, saved)

    def checkpoints(self) -> list[Path]:
        """Its checkpoint files, oldest first (best.pt apart)."""
        return checkpoints.list_checkpoints(self.dir)

    def metrics(self) -> list[dict[str, Any]]:
        """metrics.csv's rows, as numbers ("" where a column was not measured at that step)."""
        return read_rows(self.dir / "metrics.csv")

    def grids(self) -> list[tuple[int, Path]]:
        """Its fixed-noise grids, (step, PNG file), in step order."""
        return grids(self.config.sample_dir)


def train(
    fresh: bool = False, force: bool = False, backend: str = "auto", dist_timeout: float = 300.0, **settings: Any
) -> Run:
    """Train, or resume the run in settings["checkpoint_dir"] (default: checkpoints/) up to `steps`. settings are
    TrainConfig's fields (the `train` flags: steps=300, conditional="on", ...); fresh, force, backend and
    dist_timeout are the flags --fresh, --force, --backend and --dist-timeout."""
    from .training.loop import train as train_loop

    train_loop(settings, fresh=fresh, force=force, backend=backend, timeout=dist_timeout)
    return Run(Path(settings.get("checkpoint_dir", TrainConfig.checkpoint_dir)))


def load(source: str | os.PathLike, best: bool = False, device: str = "auto") -> Generator:
    """The generator of a run (its newest checkpoint, or best=True its best.pt), of one checkpoint file (.pt), or
    of an exported generator.safetensors (with its generator.json beside it)."""
    path = Path(source)
    if path.is_file() or (not path.exists() and path.suffix in (".pt", ".safetensors")):
        if best:
            raise UsageError(f"best=True reads a run directory's best.pt, and {path} is a file: pass one or the other")
        module, cfg, step, state = load_generator("", str(path), device, with_state=True)
    else:
        module, cfg, step, state = load_generator(str(path), None, device, best, with_state=True)
    return Generator(module, cfg, step, saved_shape(state))


def evaluate(
    source: str | os.PathLike | Generator,
    num: int = 10_000,
    seed: int = 0,
    best: bool = False,
    cas: int = 0,
    device: str = "auto",
    features: str | None = None,
) -> dict[str, Any]:
    """The quality figures of num samples (drawn from seed: the same figures every time) against the test set (the
    held-out images of the emoji or a folder), in the feature space named under "features" (features: auto,
    evaluator, imagenet or a TorchScript file; default: the run's), with the same figures for real training images
    under "real_reference"; cas > 0 adds the Classification Accuracy Score from that many generated images
    (conditional models)."""
    from .quality.judge import evaluate_generator

    generator = source if isinstance(source, Generator) else load(source, best, device)
    return evaluate_generator(generator, num, seed, cas_num=cas, features=features)
