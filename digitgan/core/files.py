"""Durable writes: every file this program writes goes through here, so a full disk or an unwritable directory
is one WriteError naming the file, never a traceback, and never a half-written file in place of a good one. Also
temporary files that no kill leaves behind (temporary, sweep), caches that are checked when read (write_cache,
read_cache), setting a damaged file aside (set_aside), and the checks that a directory given by the user can be
written to (ensure_writable, check_out_dir)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import UsageError, WriteError

TEMPORARY = re.compile(r"\..+\.tmp\d+")  # .NAME.tmpPID or .NAME.PART.tmpPID: what temporary() names


@contextlib.contextmanager
def temporary(path: str | Path, part: str = "", folder: bool = False) -> Iterator[Path]:
    """A temporary file (or folder) beside path, .NAME[.PART].tmpPID, removed when the block ends however it ends.
    While it exists this process holds flock(2) on it, which the OS drops when the process dies, however it dies:
    so sweep() tells a killed writer's leftovers (removed) from a live writer's (left alone), PIDs reused or not.
    Each first sweeps what killed writers left in the same folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{'.' + part if part else ''}.tmp{os.getpid()}")
    sweep(path.parent)
    while True:
        if folder:
            tmp.mkdir(exist_ok=True)
        fd = os.open(tmp, os.O_RDONLY if folder else os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                break  # else a sweep removed it between its creation and the lock: make it again
        os.close(fd)
    try:
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp) if folder else tmp.unlink(missing_ok=True)
        os.close(fd)


def sweep(folder: str | Path) -> int:
    """Remove the temporaries in folder that no living process holds (a writer killed mid-way left them), saying
    so in one line; returns the bytes freed."""
    freed, names = 0, list[str]()
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in [e for e in entries if TEMPORARY.fullmatch(e.name)]:
            with contextlib.suppress(OSError):
                fd = os.open(entry.path, os.O_RDONLY)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: its writer is alive
                    if os.stat(entry.path).st_ino == os.fstat(fd).st_ino:
                        size = _size(Path(entry.path))
                        shutil.rmtree(entry.path) if entry.is_dir(follow_symlinks=False) else os.unlink(entry.path)
                        freed, names = freed + size, [*names, entry.name]
                finally:
                    os.close(fd)
    if names:
        print(
            f"note: removed {', '.join(names)} from {folder}/ ({freed / 1e6:.1f} MB), left by a process stopped "
            f"mid-write",
            file=sys.stderr,
        )
    return freed


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> None:
    """Replace path with what write(file) writes: rendered in memory first (so a serializer such as torch.save
    never meets a failing disk mid-stream), then written to a temporary file beside path, fsynced, renamed over
    path, and the rename fsynced. On failure path is untouched and the temporary file removed."""
    path = Path(path)
    buf = io.BytesIO()
    write(buf)
    try:
        with temporary(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(buf.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(path.parent)
    except OSError as e:
        raise WriteError(path, e) from None


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


def set_aside(path: Path) -> Path:
    """Rename a damaged file (or folder) to NAME.corrupt, or NAME.corrupt.1, ... when that is taken: kept for a look,
    never deleted or overwritten. Returns the new path."""
    dest, n = path.with_name(path.name + ".corrupt"), 0
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.corrupt.{n}")
    try:
        path.rename(dest)
    except OSError as e:
        raise WriteError(dest, e) from None
    return dest


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_cache(path: str | Path, write: Callable[[BinaryIO], Any]) -> None:
    """atomic_write, then the SHA-256 of what was written into PATH.sha256 beside it, which read_cache checks."""
    path, buf = Path(path), io.BytesIO()
    write(buf)
    data = buf.getvalue()
    atomic_write(path, lambda f: f.write(data))
    atomic_write(_digest_path(path), lambda f: f.write(f"{hashlib.sha256(data).hexdigest()}  {path.name}\n".encode()))


def read_cache(path: str | Path, rebuild: str) -> bytes | None:
    """The bytes of a cache that write_cache wrote, if they still match the SHA-256 recorded then; None when it is
    missing, and, after one line saying why and that it is made again (rebuild: how), when it has no record of its
    digest (an older version wrote it) or does not match it (changed on disk since)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        expected = _digest_path(path).read_text().split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        print(f"note: {path} has no record of its SHA-256 (an older dcgan wrote it): {rebuild}", file=sys.stderr)
        return None
    if hashlib.sha256(data).hexdigest() != expected:
        print(
            f"warning: {path} does not match the SHA-256 recorded when it was written (it changed on disk): {rebuild}",
            file=sys.stderr,
        )
        return None
    return data


def ensure_writable(directory: str | Path, flag: str) -> Path:
    """The directory (made if missing), or a UsageError naming the flag when it cannot be written to."""
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=d).close()
    except OSError as e:
        raise UsageError(f"{flag} {d} is not a writable directory ({e.strerror}); pass one you can write to") from None
    return d


def check_out_dir(path: Path) -> None:
    """--out must go into an existing directory that can be written to."""
    if not path.parent.is_dir():
        raise UsageError(f"--out {path}: the directory {path.parent}/ does not exist")
    try:
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as e:
        raise UsageError(f"--out {path}: cannot write in {path.parent}/ ({e.strerror}); pass another --out") from None
