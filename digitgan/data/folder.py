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
from .freeze import FREEZE_VERSION, Freezing, FrozenSource, Pictures, reasons

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


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


class Folder(FrozenSource):
    """--dataset PATH: the pictures in a folder."""

    def __init__(self, path: str):
        self.name = self.title = path

    def freezing(self, resolution: int, channels: int, cache_dir: str) -> Freezing:
        root = Path(self.name).expanduser()
        if not root.is_dir():
            raise UsageError(
                f"--dataset {self.name}: no such folder (pass mnist, fashion-mnist, emoji or a folder of images)"
            )
        skipped: Counter = Counter()
        files, classes = folder_files(root.resolve(), skipped)
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
            yield ((str(p), label) for p, label in files), len(files), classes

        key = folder_key(root.resolve(), files, resolution, channels)
        cache = Path(cache_dir) / f"folder-{root.resolve().name}-{key}"
        return Freezing(cache, pictures, f"{root}/", f"freezing {root.name}/", skipped, none_read)
