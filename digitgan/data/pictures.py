"""One picture read for freezing: made 8-bit RGB (palette, CMYK, 16-bit and grey-with-alpha images converted; an
animated image gives its first frame; a JPEG decoded at a reduced scale where that keeps twice the resolution),
composited onto white where it has transparency, scaled with Lanczos so that its shorter side is the resolution,
and centre-cropped to a square; or the reason it cannot be used. It runs in the freezing pool's worker processes,
so it imports Pillow and NumPy only."""

from __future__ import annotations

import io
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

BACKGROUND = (255, 255, 255)  # what shows through transparent pixels: white, as emoji are usually seen
MIN_SIDE = 8  # pixels: anything smaller holds no picture worth scaling up
MAX_PIXELS = 64 * 2**20  # Pillow's guard against decompression bombs, at 64 megapixels


def square(image: Image.Image, resolution: int) -> np.ndarray:
    """An 8-bit RGB image scaled (Lanczos) so that its shorter side is `resolution`, centre-cropped: (R, R, 3).
    Only the square that is kept is resampled (Pillow's box: the same filter at the same scale, a sixth less work
    for a portrait photo)."""
    w, h = image.size
    scale = resolution / min(w, h)
    size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
    if size == (w, h):
        left, top = (w - resolution) // 2, (h - resolution) // 2
        return np.asarray(image.crop((left, top, left + resolution, top + resolution)))
    sx, sy = w / size[0], h / size[1]
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    box = (left * sx, top * sy, (left + resolution) * sx, (top + resolution) * sy)
    return np.asarray(image.resize((resolution, resolution), Image.Resampling.LANCZOS, box=box))


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


def read_image(data: bytes | str, resolution: int, converted: Counter) -> np.ndarray | str:
    """The (R, R, 3) uint8 picture in an image file (its bytes, or its path), or why it cannot be used."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data if isinstance(data, bytes) else Path(data).read_bytes()))
            if image.width * image.height > MAX_PIXELS:
                return f"larger than {MAX_PIXELS // 2**20} megapixels (decompression-bomb guard)"
            if min(image.size) < MIN_SIDE:
                return f"smaller than {MIN_SIDE} pixels on a side"
            # a JPEG decodes in its DCT at the smallest of its scales (1/2, 1/4, 1/8) still twice the resolution,
            # as Pillow's thumbnails: a large photo in a fraction of the time, its pixels within 2 levels on average
            # of a full decode's (Lanczos from a 1x scale would be 6 levels off)
            image.draft(image.mode, (2 * resolution, 2 * resolution))
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


def luma(rgb: np.ndarray) -> np.ndarray:
    """(..., 3, R, R) uint8 RGB -> (..., 1, R, R) uint8 grey, ITU-R 601 as Pillow's "L" (in float32, rounded)."""
    f = rgb.astype(np.float32)
    return np.round(f[..., 0, :, :] * 0.299 + f[..., 1, :, :] * 0.587 + f[..., 2, :, :] * 0.114)[
        ..., None, :, :
    ].astype(np.uint8)


def read_for_freezing(data: bytes | str, resolution: int, grey: bool) -> tuple[np.ndarray | str, bool, Counter]:
    """(the (C, R, R) uint8 picture, or why it cannot be used; whether it is grey; what was converted): C is 1 when
    grey is asked for, else 3. The freezing pool's unit of work."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is damaged, not half a picture
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    converted: Counter = Counter()
    picture = read_image(data, resolution, converted)
    if isinstance(picture, str):
        return picture, False, converted
    chw = np.ascontiguousarray(picture.transpose(2, 0, 1))
    is_grey = bool((chw[0] == chw[1]).all() and (chw[0] == chw[2]).all())
    return (luma(chw) if grey else chw), is_grey, converted
