"""Pictures a user brings: a folder of image files, frozen once (freeze.py). Subfolders are its classes when there are
two or more. Its cache is keyed by the relative path, size and modification time of every file in it, so a changed
folder is frozen again."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ..errors import UsageError
from .cache import reasons
from .freeze import FREEZE_VERSION, Freezing, FrozenSource, Pictures

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def folder_files(root: Path, skipped: Counter) -> tuple[list[tuple[str, int]], tuple[str, ...]]:
    """The image files under root (paths relative to it, in the order of their parts) with their labels, and the
    class names: the subfolders that hold images, when there are at least two (files beside them are skipped);
    otherwise every image under root, unlabelled."""
    found: list[tuple[str, ...]] = []  # each file's path parts under root
    for top, dirs, files in os.walk(root):  # links to folders are not followed: no loops
        at = Path(top).relative_to(root).parts
        for d in dirs:
            if os.path.islink(os.path.join(top, d)):
                skipped["a link to a folder (not followed)"] += 1
        for f in files:
            if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES:
                found.append((*at, f))
            elif not f.startswith("."):
                skipped["not an image file (by its name)"] += 1
    found.sort()
    tops = sorted({parts[0] for parts in found if len(parts) > 1})
    if len(tops) < 2:
        return [(os.path.join(*parts), 0) for parts in found], ()
    index = {name: i for i, name in enumerate(tops)}
    labelled = [(os.path.join(*parts), index[parts[0]]) for parts in found if len(parts) > 1]
    skipped["beside the class folders"] += len(found) - len(labelled)
    return labelled, tuple(tops)


def folder_key(root: Path, files: list[tuple[str, int]], resolution: int, channels: int) -> str:
    """What a folder's cache is keyed by: every file's relative path, size and modification time, the label,
    the resolution and channels asked for, and FREEZE_VERSION."""
    h = hashlib.sha256(f"{FREEZE_VERSION} {resolution} {channels}".encode())
    for rel, label in files:
        try:
            st = os.stat(root / rel)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{label}\n".encode())
        except OSError:  # a broken link or a loop: read_image will say so
            h.update(f"{rel}\0?\n".encode())
    return h.hexdigest()[:16]


class Folder(FrozenSource):
    """--dataset PATH: the pictures in a folder."""

    def __init__(self, path: str):
        self.name = self.title = path

    def freezing(self, resolution: int, channels: int, cache_dir: str) -> Freezing:
        root = Path(self.name).expanduser()
        if not root.is_dir():
            raise UsageError(
                f"--dataset {self.name}: no such folder (pass mnist, fashion-mnist, stacked-mnist, emoji or a folder "
                f"of images)"
            )
        skipped: Counter = Counter()
        base = root.resolve()
        files, classes = folder_files(base, skipped)
        if not files:
            raise UsageError(
                f"--dataset {self.name}: the folder holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )

        def none_read(used: int, passed_over: Counter) -> None:
            if not used:
                raise UsageError(
                    f"--dataset {self.name}: none of its {len(files)} image files could be read "
                    f"({reasons(passed_over)})"
                )

        @contextlib.contextmanager
        def pictures() -> Iterator[Pictures]:
            yield ((str(base / rel), label) for rel, label in files), len(files), classes

        key = folder_key(base, files, resolution, channels)
        cache = Path(cache_dir) / f"folder-{base.name}-{key}"
        return Freezing(cache, pictures, f"{root}/", f"freezing {root.name}/", skipped, none_read)
