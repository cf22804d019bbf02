"""Pictures a user brings (a folder of image files) and the emoji of npm's emoji-datasource-google, frozen once
into a cached uint8 array at the run's resolution.

Each image is read with Pillow, made 8-bit RGB (palette, CMYK, 16-bit and grey-with-alpha images converted; an
animated image gives its first frame), composited onto white where it has transparency, scaled with Lanczos so
that its shorter side is the resolution, and centre-cropped to a square. What cannot be read is skipped and
counted by reason, never a traceback. A folder's cache is keyed by the relative path, size and modification time
of every file in it, so a changed folder is frozen again; the frozen pixels' SHA-256 is the data's fingerprint.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError
from tqdm import tqdm

from .errors import UsageError
from .files import read_cache, write_cache

EMOJI_PACKAGE = "emoji-datasource-google@16.0.0"
EMOJI_TARBALL = "emoji-datasource-google-16.0.0.tgz"
EMOJI_TARBALL_SHA256 = "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438"
EMOJI_DIR = "package/img/google/64/"
BACKGROUND = (255, 255, 255)  # what shows through transparent pixels: white, as emoji are usually seen
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
MIN_SIDE = 8  # pixels: anything smaller holds no picture worth scaling up
MAX_PIXELS = 64 * 2 ** 20  # Pillow's guard against decompression bombs, at 64 megapixels
FREEZE_VERSION = 1  # part of every cache key: bump when freezing changes


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
        return (f"{name}: {len(self.labels)} images used" + (f" ({reasons(self.converted)})" if self.converted else "")
                + f", {sum(self.skipped.values())} skipped" + (f" ({reasons(self.skipped)})" if self.skipped else "")
                + (f"; {len(self.classes)} classes: " + ", ".join(f"{c} {counts[i]}" for i, c in enumerate(self.classes))
                   if self.classes else "; no classes (unlabelled)"))


def reasons(counts: Counter) -> str:
    """"3 palette, 1 CMYK": what happened to how many, most first."""
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
                return f"larger than {MAX_PIXELS // 2 ** 20} megapixels (decompression-bomb guard)"
            if min(image.size) < MIN_SIDE:
                return f"smaller than {MIN_SIDE} pixels on a side"
            image.load()
            return square(to_rgb(image, converted), resolution)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return f"larger than {MAX_PIXELS // 2 ** 20} megapixels (decompression-bomb guard)"
    except OSError as e:
        if e.errno == 40:  # ELOOP
            return "a symbolic link loop"
        return "unreadable (not an image, or damaged)"
    except (UnidentifiedImageError, ValueError, SyntaxError, EOFError):
        return "unreadable (not an image, or damaged)"


def freeze(items: Iterable[tuple[str, Callable[[], bytes], int]], count: int, resolution: int,
           classes: tuple[str, ...], skipped: Counter, desc: str) -> Frozen:
    """Read every (name, bytes, label) item into one uint8 array, with a progress bar."""
    pictures, labels, converted = [], [], Counter()
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is damaged, not half a picture
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    for name, data, label in tqdm(items, total=count, desc=desc, unit="img", mininterval=0.5, leave=False,
                                  disable=count < 500):
        picture = read_image(data, resolution, converted)
        if isinstance(picture, str):
            skipped[picture] += 1
            continue
        pictures.append(picture)
        labels.append(label)
    pixels = np.stack(pictures).transpose(0, 3, 1, 2) if pictures else np.zeros((0, 3, resolution, resolution), np.uint8)
    return Frozen(np.ascontiguousarray(pixels), np.asarray(labels, np.int64), classes, converted, skipped)


def grey_if_grey(frozen: Frozen, channels: int) -> Frozen:
    """One channel when asked for (1), or when every picture is grey (0: decided from the images); else three."""
    grey = channels == 1 or (channels == 0 and bool((frozen.pixels[:, 0:1] == frozen.pixels[:, 1:]).all()))
    if grey:
        rgb = frozen.pixels.astype(np.float32)
        luma = rgb[:, 0] * 0.299 + rgb[:, 1] * 0.587 + rgb[:, 2] * 0.114  # ITU-R 601, as Pillow's "L"
        frozen.pixels = np.round(luma)[:, None].astype(np.uint8)
    return frozen


# ---------------------------------------------------------------- a folder

def folder_files(root: Path, skipped: Counter) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    """The image files under root with their labels, and the class names: the subfolders that hold images, when
    there are at least two (files beside them are skipped); otherwise every image under root, unlabelled."""
    found: list[Path] = []
    for top, dirs, files in os.walk(root):  # links to folders are not followed: no loops
        for d in dirs:
            if (Path(top) / d).is_symlink():
                skipped["a link to a folder (not followed)"] += 1
        for f in files:
            (found if Path(f).suffix.lower() in IMAGE_SUFFIXES else []).append(Path(top) / f)
            if Path(f).suffix.lower() not in IMAGE_SUFFIXES and not f.startswith("."):
                skipped["not an image file (by its name)"] += 1
    found.sort()
    tops = sorted({p.relative_to(root).parts[0] for p in found if len(p.relative_to(root).parts) > 1})
    if len(tops) < 2:
        return [(p, 0) for p in found], ()
    index = {name: i for i, name in enumerate(tops)}
    labelled = [(p, index[p.relative_to(root).parts[0]]) for p in found if len(p.relative_to(root).parts) > 1]
    skipped["beside the class folders"] += len(found) - len(labelled)
    return labelled, tuple(tops)


def folder_key(root: Path, files: list[tuple[Path, int]], resolution: int, channels: int) -> str:
    """What a folder's cache is keyed by: every file's relative path, size and modification time, the label,
    the resolution and channels asked for, and FREEZE_VERSION."""
    h = hashlib.sha256(f"{FREEZE_VERSION} {resolution} {channels}".encode())
    for path, label in files:
        try:
            st = path.stat()
            h.update(f"{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\0{label}\n".encode())
        except OSError:  # a broken link or a loop: read_image will say so
            h.update(f"{path.relative_to(root)}\0?\n".encode())
    return h.hexdigest()[:16]


def load_folder(path: str, resolution: int, channels: int, cache_dir: str,
                say: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> Frozen:
    """A folder's images, frozen (or read back from cache_dir when the folder has not changed)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UsageError(f"--dataset {path}: no such folder (pass mnist, fashion-mnist, emoji or a folder of images)")
    skipped: Counter = Counter()
    files, classes = folder_files(root.resolve(), skipped)
    if not files:
        raise UsageError(f"--dataset {path}: the folder holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    cache = Path(cache_dir) / f"folder-{root.resolve().name}-{folder_key(root.resolve(), files, resolution, channels)}.npz"
    frozen = _read_frozen(cache)
    if frozen is None:
        frozen = freeze(((str(p), p.read_bytes, label) for p, label in files), len(files), resolution, classes,
                        skipped, f"freezing {root.name}/")
        frozen = grey_if_grey(frozen, channels)
        if len(frozen.labels) == 0:
            raise UsageError(f"--dataset {path}: none of its {len(files)} image files could be read "
                             f"({reasons(frozen.skipped)})")
        _write_frozen(cache, frozen)
        say(frozen.summary(f"{root}/ at {resolution}x{resolution}"))
    return frozen


def _write_frozen(path: Path, frozen: Frozen) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = json.dumps({"classes": frozen.classes, "converted": frozen.converted, "skipped": frozen.skipped})
    write_cache(path, lambda f: np.savez(f, pixels=frozen.pixels, labels=frozen.labels, record=np.array(record)))


def _read_frozen(path: Path) -> Frozen | None:
    data = read_cache(path, "freezing the images again")
    if data is None:
        return None
    arrays = np.load(io.BytesIO(data))
    record = json.loads(str(arrays["record"]))
    return Frozen(arrays["pixels"], arrays["labels"], tuple(record["classes"]), Counter(record["converted"]),
                  Counter(record["skipped"]))


# ---------------------------------------------------------------- the emoji

def emoji_tarball(cache_dir: str | Path) -> Path:
    """cache_dir/emoji-datasource-google-16.0.0.tgz, fetched with `npm pack` if missing, its SHA-256 checked."""
    cache = Path(cache_dir)
    path = cache / EMOJI_TARBALL
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"fetching {EMOJI_PACKAGE} from npm into {cache}/ (74 MB, once)", file=sys.stderr)
        try:
            done = subprocess.run(["npm", "pack", EMOJI_PACKAGE, "--pack-destination", str(cache)],
                                  capture_output=True, text=True, timeout=600)
            why = done.stderr.strip().splitlines()[-1] if done.returncode else ""
        except (OSError, subprocess.TimeoutExpired) as e:
            why = str(e)
        if not path.exists():
            raise UsageError(f"could not fetch {EMOJI_PACKAGE} with npm ({why or 'no file'}); put {EMOJI_TARBALL} "
                             f"into {cache}/ by hand (npm pack {EMOJI_PACKAGE})")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != EMOJI_TARBALL_SHA256:
        raise UsageError(f"{path} has SHA-256 {digest}, expected {EMOJI_TARBALL_SHA256}: delete it and run again")
    return path


def emoji_items(tar: tarfile.TarFile) -> tuple[list[tuple[str, Callable[[], bytes], int]], tuple[str, ...]]:
    """Every 64x64 emoji image with its category's label (skin-tone variants under their emoji's category), the
    categories in the package's own order (categories.json)."""
    table = json.load(tar.extractfile("package/emoji.json"))
    order = list(json.load(tar.extractfile("package/categories.json")))
    category = {}
    for e in table:
        for image in [e["image"], *(v["image"] for v in e.get("skin_variations", {}).values())]:
            category[image] = e["category"]
    classes = tuple(sorted(set(category.values()), key=lambda c: order.index(c) if c in order else len(order)))
    members = sorted((m for m in tar.getmembers() if m.name.startswith(EMOJI_DIR) and m.isfile()),
                     key=lambda m: m.name)
    return [(m.name, (lambda m=m: tar.extractfile(m).read()), classes.index(category[m.name[len(EMOJI_DIR):]]))
            for m in members if m.name[len(EMOJI_DIR):] in category], classes


def load_emoji(resolution: int, channels: int, cache_dir: str,
               say: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> Frozen:
    """The 3,786 emoji, their categories as classes, frozen at the resolution (cached in cache_dir)."""
    cache = Path(cache_dir) / f"emoji-{FREEZE_VERSION}-{resolution}-{channels}.npz"
    frozen = _read_frozen(cache)
    if frozen is None:
        with tarfile.open(emoji_tarball(cache_dir)) as tar:
            items, classes = emoji_items(tar)
            frozen = grey_if_grey(freeze(items, len(items), resolution, classes, Counter(), "freezing the emoji"),
                                  channels)
        _write_frozen(cache, frozen)
        say(frozen.summary(f"emoji ({EMOJI_PACKAGE}) at {resolution}x{resolution}"))
    return frozen


def fingerprint(pixels: np.ndarray, labels: np.ndarray, classes: Iterable[str]) -> str:
    """The data's identity: the SHA-256 of its frozen pixels, labels and class names (16 hex digits)."""
    h = hashlib.sha256(np.ascontiguousarray(pixels).data)
    h.update(np.ascontiguousarray(labels).data)
    h.update("\0".join(classes).encode())
    return h.hexdigest()[:16]
