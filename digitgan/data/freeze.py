"""Pictures frozen once into a cached uint8 array at the run's resolution: what the emoji and a folder of image
files share (folder.py, emoji.py), and the seeded hold-out that stands in for the test set they do not have.

Each image is read with Pillow, made 8-bit RGB (palette, CMYK, 16-bit and grey-with-alpha images converted; an
animated image gives its first frame), composited onto white where it has transparency, scaled with Lanczos so
that its shorter side is the resolution, and centre-cropped to a square. What cannot be read is skipped and
counted by reason, never a traceback. The frozen pixels' SHA-256 is the data's fingerprint.
"""

from __future__ import annotations

import io
import json
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError
from tqdm import tqdm

from ..core.files import read_cache, write_cache
from .dataset import Dataset
from .shape import Shape
from .source import Source

BACKGROUND = (255, 255, 255)  # what shows through transparent pixels: white, as emoji are usually seen
MIN_SIDE = 8  # pixels: anything smaller holds no picture worth scaling up
MAX_PIXELS = 64 * 2**20  # Pillow's guard against decompression bombs, at 64 megapixels
FREEZE_VERSION = 1  # part of every cache key: bump when freezing changes
HOLDOUT_SHARE, HOLDOUT_MAX, HOLDOUT_SEED = 0.1, 10_000, 2024  # the held-out images quality is measured on


@dataclass
class Frozen:
    """A set of images frozen at one resolution: (N, C, R, R) uint8 pixels, (N,) labels, the class names, and
    what was done on the way (reason -> count)."""

    pixels: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    converted: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)

    def summary(self, name: str) -> str:
        counts = Counter(self.labels.tolist())
        return (
            f"{name}: {len(self.labels)} images used"
            + (f" ({reasons(self.converted)})" if self.converted else "")
            + f", {sum(self.skipped.values())} skipped"
            + (f" ({reasons(self.skipped)})" if self.skipped else "")
            + (
                f"; {len(self.classes)} classes: " + ", ".join(f"{c} {counts[i]}" for i, c in enumerate(self.classes))
                if self.classes
                else "; no classes (unlabelled)"
            )
        )


def reasons(counts: Counter) -> str:
    """ "3 palette, 1 CMYK": what happened to how many, most first."""
    return ", ".join(f"{n} {why}" for why, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def square(image: Image.Image, resolution: int) -> np.ndarray:
    """An 8-bit RGB image scaled (Lanczos) so that its shorter side is `resolution`, centre-cropped: (R, R, 3)."""
    w, h = image.size
    scale = resolution / min(w, h)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    if size != (w, h):
        image = image.resize(size, Image.Resampling.LANCZOS)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return np.asarray(image.crop((left, top, left + resolution, top + resolution)))


def to_rgb(image: Image.Image, converted: Counter) -> Image.Image:
    """8-bit RGB, transparency composited onto BACKGROUND; each conversion counted by what it converted."""
    if getattr(image, "n_frames", 1) > 1:
        converted["animated (its first frame used)"] += 1
        image.seek(0)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):  # 16- or 32-bit grey: keep the top 8 bits of 16
        converted["16-bit"] += 1
        image = Image.fromarray((np.asarray(image, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8))
    elif mode == "P":
        converted["palette"] += 1
        image = image.convert("RGBA")
    elif mode == "CMYK":
        converted["CMYK"] += 1
    image = image.convert("RGBA") if image.mode in ("LA", "La", "PA", "RGBa") else image
    if image.mode == "RGBA":
        flat = Image.new("RGB", image.size, BACKGROUND)
        flat.paste(image, mask=image.getchannel("A"))
        return flat
    return image.convert("RGB")


def read_image(data: Callable[[], bytes], resolution: int, converted: Counter) -> np.ndarray | str:
    """The (R, R, 3) uint8 picture in an image file's bytes, or why it cannot be used."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data()))
            if image.width * image.height > MAX_PIXELS:
                return f"larger than {MAX_PIXELS // 2**20} megapixels (decompression-bomb guard)"
            if min(image.size) < MIN_SIDE:
                return f"smaller than {MIN_SIDE} pixels on a side"
            image.load()
            return square(to_rgb(image, converted), resolution)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return f"larger than {MAX_PIXELS // 2**20} megapixels (decompression-bomb guard)"
    except OSError as e:
        if e.errno == 40:  # ELOOP
            return "a symbolic link loop"
        return "unreadable (not an image, or damaged)"
    except (UnidentifiedImageError, ValueError, SyntaxError, EOFError):
        return "unreadable (not an image, or damaged)"


def freeze(
    items: Iterable[tuple[str, Callable[[], bytes], int]],
    count: int,
    resolution: int,
    classes: tuple[str, ...],
    skipped: Counter,
    desc: str,
) -> Frozen:
    """Read every (name, bytes, label) item into one uint8 array, with a progress bar."""
    pictures, labels, converted = [], [], Counter[str]()
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is damaged, not half a picture
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    for _, data, label in tqdm(
        items, total=count, desc=desc, unit="img", mininterval=0.5, leave=False, disable=count < 500
    ):
        picture = read_image(data, resolution, converted)
        if isinstance(picture, str):
            skipped[picture] += 1
            continue
        pictures.append(picture)
        labels.append(label)
    pixels = (
        np.stack(pictures).transpose(0, 3, 1, 2) if pictures else np.zeros((0, 3, resolution, resolution), np.uint8)
    )
    return Frozen(np.ascontiguousarray(pixels), np.asarray(labels, np.int64), classes, converted, skipped)


def grey_if_grey(frozen: Frozen, channels: int) -> Frozen:
    """One channel when asked for (1), or when every picture is grey (0: decided from the images); else three."""
    grey = channels == 1 or (channels == 0 and bool((frozen.pixels[:, 0:1] == frozen.pixels[:, 1:]).all()))
    if grey:
        rgb = frozen.pixels.astype(np.float32)
        luma = rgb[:, 0] * 0.299 + rgb[:, 1] * 0.587 + rgb[:, 2] * 0.114  # ITU-R 601, as Pillow's "L"
        frozen.pixels = np.round(luma)[:, None].astype(np.uint8)
    return frozen


def write_frozen(path: Path, frozen: Frozen) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = json.dumps({"classes": frozen.classes, "converted": frozen.converted, "skipped": frozen.skipped})
    write_cache(path, lambda f: np.savez(f, pixels=frozen.pixels, labels=frozen.labels, record=np.array(record)))


def read_frozen(path: Path) -> Frozen | None:
    data = read_cache(path, "freezing the images again")
    if data is None:
        return None
    arrays = np.load(io.BytesIO(data))
    record = json.loads(str(arrays["record"]))
    return Frozen(
        arrays["pixels"],
        arrays["labels"],
        tuple(record["classes"]),
        Counter(record["converted"]),
        Counter(record["skipped"]),
    )


def holdout_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) indices, each in file order, of a source of n images with no test set of its own:
    HOLDOUT_SHARE of them (at least 2, for KID; at most HOLDOUT_MAX) drawn with a fixed seed, so a folder splits the
    same way in every run and the quality figures' real images are never trained on."""
    k = max(2, min(round(n * HOLDOUT_SHARE), HOLDOUT_MAX))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_SEED)).numpy()
    return np.sort(order[k:]), np.sort(order[:k])


@dataclass(frozen=True)
class Freezing:
    """Where a frozen source's pictures are cached, how they are frozen when the cache is missing or stale, and what
    the summary said then calls them."""

    cache: Path
    freeze: Callable[[], Frozen]  # every picture read as 8-bit RGB (grey_if_grey decides the channels after)
    about: str


class FrozenSource(Source):
    """A source whose pictures are frozen once and split into training images and a seeded hold-out."""

    def freezing(self, resolution: int, channels: int, cache_dir: str) -> Freezing:
        raise NotImplementedError

    def frozen(
        self,
        resolution: int,
        channels: int,
        cache_dir: str,
        say: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
    ) -> Frozen:
        """All its pictures at the resolution, from the cache in cache_dir, or frozen into it (saying what was used
        and skipped)."""
        plan = self.freezing(resolution, channels, cache_dir)
        frozen = read_frozen(plan.cache)
        if frozen is None:
            frozen = grey_if_grey(plan.freeze(), channels)
            write_frozen(plan.cache, frozen)
            say(frozen.summary(f"{plan.about} at {resolution}x{resolution}"))
        return frozen

    def load(self, split: str, resolution: int, channels: int, cache_dir: str, data_dir: str = "") -> Dataset:
        frozen = self.frozen(resolution, channels, cache_dir)
        train, held = holdout_split(len(frozen.labels))
        pick = held if split == "test" else train
        return Dataset(
            torch.from_numpy(frozen.pixels[pick]),
            torch.from_numpy(frozen.labels[pick]),
            f"{self.name}-{split}",
            Shape(resolution, frozen.pixels.shape[1], frozen.classes),
            held_out=len(held),
        )

    def sizes(
        self, resolution: int, channels: int, cache_dir: str, data_dir: str, say: Callable[[str], None]
    ) -> tuple[int, int, tuple[str, ...]]:
        frozen = self.frozen(resolution, channels, cache_dir, say=say)
        return len(frozen.labels), len(holdout_split(len(frozen.labels))[0]), frozen.classes
