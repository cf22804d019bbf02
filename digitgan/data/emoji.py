"""The 3,786 emoji of npm's emoji-datasource-google at 64x64, their categories as classes, frozen once (freeze.py)."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

from ..core.fetch import Download, fetch, member_bytes
from .freeze import FREEZE_VERSION, Freezing, FrozenSource, Pictures

EMOJI_PACKAGE = Download(
    "emoji-datasource-google@16.0.0",
    "emoji-datasource-google-16.0.0.tgz",
    "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
    "npm",
    size="74 MB",
)
EMOJI_DIR = "package/img/google/64/"


def emoji_tarball(cache_dir: str | Path) -> Path:
    """cache_dir/emoji-datasource-google-16.0.0.tgz, fetched with `npm pack` if missing, its SHA-256 checked."""
    fetch(EMOJI_PACKAGE, cache_dir, lambda line: print(line, file=sys.stderr), f" (npm pack {EMOJI_PACKAGE.spec})")
    return Path(cache_dir) / EMOJI_PACKAGE.file


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


class Emoji(FrozenSource):
    """The 3,786 emoji, their categories as classes."""

    name = "emoji"
    title = "the emoji"

    def freezing(self, resolution: int, channels: int, cache_dir: str) -> Freezing:
        @contextlib.contextmanager
        def pictures() -> Iterator[Pictures]:
            with tarfile.open(emoji_tarball(cache_dir)) as tar:
                items, classes = emoji_items(tar)
                yield ((read(), label) for _, read, label in items), len(items), classes

        cache = Path(cache_dir) / f"emoji-{FREEZE_VERSION}-{resolution}-{channels}"
        return Freezing(cache, pictures, f"emoji ({EMOJI_PACKAGE.spec})", "freezing the emoji")


EMOJI = Emoji()
