"""Durable writes: every file this program writes goes through here, so a full disk or an unwritable directory
is one WriteError naming the file, never a traceback, and never a half-written file in place of a good one."""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable

from .errors import WriteError


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> None:
    """Replace path with what write(file) writes: rendered in memory first (so a serializer such as torch.save
    never meets a failing disk mid-stream), then written to a temporary file beside path, fsynced, renamed over
    path, and the rename fsynced. On failure path is untouched and the temporary file removed."""
    path = Path(path)
    buf = io.BytesIO()
    write(buf)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        raise WriteError(path, e) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def append_line(path: str | Path, line: str) -> None:
    """Append one line, not fsynced: callers keep only logs here that are rebuilt from checkpoints on resume."""
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError as e:
        raise WriteError(path, e) from None


def fsync_dir(directory: Path) -> None:
    """Make a rename in directory durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
