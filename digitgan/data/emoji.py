"""The 3,786 emoji of npm's emoji-datasource-google, their categories as classes, frozen once (freeze.py): at 64 px
and below from the package's 64x64 PNGs; at 128 from the same emoji's 136x128 colour bitmaps in Debian's
fonts-noto-color-emoji (its CBDT font, read with fontTools: each emoji's code points through the font's character
map and its ligatures, which draw the sequences, skin tones and flags), padded to a square on transparency. An
emoji the font lacks (newer than it) is counted and said, never silently dropped."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import sys
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from ..core.fetch import Download, deb_file, fetch, member_bytes
from .freeze import FREEZE_VERSION, Freezing, FrozenSource, Pictures

EMOJI_PACKAGE = Download(
    "emoji-datasource-google@16.0.0",
    "emoji-datasource-google-16.0.0.tgz",
    "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
    "npm",
    size="74 MB",
)
EMOJI_DIR = "package/img/google/64/"
EMOJI_FONT = Download(
    "fonts-noto-color-emoji=2.042-0+deb12u1",
    "fonts-noto-color-emoji_2.042-0+deb12u1_all.deb",
    "a5ab0f69c7938423862320d9aca5dd187b3fd879d6a9a57dd52e17c3fa8d2751",
    "apt",
    size="10 MB",
)
FONT_FILE = "./usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
FONT_SIDE = 128  # the side the font's bitmaps give (136x128, padded to 136x136 and scaled)
NOT_IN_FONT = "not in Noto Color Emoji 2.042 (newer than the font)"


def emoji_tarball(cache_dir: str | Path) -> Path:
    """cache_dir/emoji-datasource-google-16.0.0.tgz, fetched with `npm pack` if missing, its SHA-256 checked."""
    fetch(EMOJI_PACKAGE, cache_dir, lambda line: print(line, file=sys.stderr), f" (npm pack {EMOJI_PACKAGE.spec})")
    return Path(cache_dir) / EMOJI_PACKAGE.file


def emoji_font(cache_dir: str | Path) -> bytes:
    """The fonts-noto-color-emoji .deb in cache_dir, fetched with `apt-get download` if missing, its SHA-256
    checked."""
    how = f" (on a Debian machine: apt-get download {EMOJI_FONT.spec}); or train the emoji at 64 pixels"
    return fetch(EMOJI_FONT, cache_dir, lambda line: print(line, file=sys.stderr), how)


def emoji_items(tar: tarfile.TarFile) -> tuple[list[tuple[str, Callable[[], bytes], int]], tuple[str, ...]]:
    """Every 64x64 emoji image with its category's label (skin-tone variants under their emoji's category), the
    categories in the package's own order (categories.json)."""
    table = json.loads(member_bytes(tar, "package/emoji.json"))
    order = list(json.loads(member_bytes(tar, "package/categories.json")))
    category = {}
    for e in table:
        for image in [e["image"], *(v["image"] for v in e.get("skin_variations", {}).values())]:
            category[image] = e["category"]
    classes = tuple(sorted(set(category.values()), key=lambda c: order.index(c) if c in order else len(order)))
    members = sorted((m for m in tar.getmembers() if m.name.startswith(EMOJI_DIR) and m.isfile()), key=lambda m: m.name)
    return [
        (m.name, functools.partial(member_bytes, tar, m), classes.index(category[m.name[len(EMOJI_DIR) :]]))
        for m in members
        if m.name[len(EMOJI_DIR) :] in category
    ], classes


class EmojiFont:
    """The colour bitmaps of Noto Color Emoji's CBDT font, found by an emoji's code points."""

    def __init__(self, ttf: bytes):
        from fontTools.ttLib import TTFont  # only here: the 64-pixel emoji and everything else do without it

        font = TTFont(io.BytesIO(ttf), lazy=True)
        self.cmap = font.getBestCmap()
        self.bitmaps = font["CBDT"].strikeData[0]
        self.ligatures: dict[tuple[str, ...], str] = {}  # glyph sequence -> the glyph that draws it
        for lookup in font["GSUB"].table.LookupList.Lookup:
            for table in lookup.SubTable:
                table = table.ExtSubTable if lookup.LookupType == 7 else table
                for first, ligatures in getattr(table, "ligatures", {}).items():
                    for ligature in ligatures:
                        self.ligatures[(first, *ligature.Component)] = ligature.LigGlyph

    def glyph(self, points: list[int]) -> str | None:
        """The glyph that draws these code points, trying them without and with the emoji presentation selector
        (FE0F) that the package's file names and the font's sequences spell differently; None if it has none."""
        plain = [p for p in points if p != 0xFE0F]
        for seq in (points, plain, [*plain[:1], 0xFE0F, *plain[1:]]):
            glyphs = [self.cmap.get(p) for p in seq]
            if None in glyphs:
                continue
            found = glyphs[0] if len(glyphs) == 1 else self.ligatures.get(tuple(g for g in glyphs if g))
            if found in self.bitmaps:
                return found
        return None

    def png(self, glyph: str) -> bytes:
        """The glyph's bitmap (136x128) padded to a square on transparency, as a PNG: freezing puts it on white."""
        from PIL import Image

        image = Image.open(io.BytesIO(self.bitmaps[glyph].imageData)).convert("RGBA")
        side = max(image.size)
        square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        out = io.BytesIO()
        square.save(out, format="PNG")
        return out.getvalue()


def font_items(
    tar: tarfile.TarFile, deb: bytes
) -> tuple[list[tuple[str, Callable[[], bytes], int]], tuple[str, ...], Counter]:
    """The package's emoji (emoji_items: the same names, labels and order) drawn by the font, and what the font
    lacks, counted."""
    items, classes = emoji_items(tar)
    font = EmojiFont(deb_file(deb, FONT_FILE))
    drawn: list[tuple[str, Callable[[], bytes], int]] = []
    lacking: Counter = Counter()
    for name, _, label in items:
        glyph = font.glyph([int(p, 16) for p in Path(name).stem.split("-")])
        if glyph is None:
            lacking[NOT_IN_FONT] += 1
        else:
            drawn.append((name, functools.partial(font.png, glyph), label))
    return drawn, classes, lacking


class Emoji(FrozenSource):
    """The 3,786 emoji, their categories as classes: npm's 64x64 PNGs, or at 128 px the Debian font's bitmaps."""

    name = "emoji"
    title = "the emoji"
    max_resolution = FONT_SIDE
    resolution_note = " (64 from npm's PNGs, 128 from Debian's fonts-noto-color-emoji)"

    def freezing(self, resolution: int, channels: int, cache_dir: str) -> Freezing:
        from_font = resolution > 64
        lacking: Counter = Counter()

        @contextlib.contextmanager
        def pictures() -> Iterator[Pictures]:
            with tarfile.open(emoji_tarball(cache_dir)) as tar:
                if from_font:
                    items, classes, missing = font_items(tar, emoji_font(cache_dir))
                    lacking.update(missing)  # the freeze counts them among the skipped
                else:
                    items, classes = emoji_items(tar)
                yield ((read(), label) for _, read, label in items), len(items), classes

        cache = Path(cache_dir) / f"emoji-{FREEZE_VERSION}-{resolution}-{channels}"
        about = f"emoji ({EMOJI_PACKAGE.spec}" + (f", drawn by {EMOJI_FONT.spec})" if from_font else ")")
        return Freezing(cache, pictures, about, "freezing the emoji", skipped=lacking)


EMOJI = Emoji()
