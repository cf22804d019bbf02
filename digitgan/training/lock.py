"""One writer per run: the lock a trainer holds on its run directory.

The lock is flock(2) on CHECKPOINT_DIR/train.lock, held by the training process (under torchrun: rank 0, for the
whole group) from before it reads the directory until it ends. The OS drops it when that process dies, however it
dies, so a `kill -9` never leaves a stale lock behind. The file also says who holds it (pid, host, since when),
which a second trainer names in its refusal and readers (sample, evaluate, export) mention in a note.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import UsageError

NAME = "train.lock"


class RunLock:
    """Held by at most one process per run directory; acquire() refuses a second trainer with a UsageError."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._named = False

    def acquire(self, run_dir: Path) -> None:
        fd = os.open(run_dir / NAME, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by child processes
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _describe(_read(fd))
            os.close(fd)
            raise UsageError(
                f"{run_dir}/ is being trained by {who}; nothing was changed: two trainers in one run "
                f"directory would mix two runs. Wait for it to finish (or stop it with Ctrl-C: it saves "
                f"a checkpoint and this command then resumes), or pass another --checkpoint-dir"
            ) from None
        self._fd, self._named = fd, False

    def name_holder(self) -> None:
        """Write who holds the lock into it: once the run is sure to train, so that a run refused for bad input
        leaves even the lock file as it was."""
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "processes": int(os.environ.get("WORLD_SIZE", "1")),
        }
        if self._fd is None:
            return
        with contextlib.suppress(OSError):  # a full disk: the lock holds all the same, its holder goes unnamed
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps(holder).encode() + b"\n", 0)
            self._named = True

    def release(self) -> None:
        """Let go (a named holder is erased first, so that readers see no trainer); a no-op when not held."""
        if self._fd is not None:
            if self._named:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def _read(fd: int) -> dict[str, Any]:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:  # being written this instant, or damaged: the lock itself is what counts
        return {}


def _describe(holder: dict[str, Any]) -> str:
    if "pid" not in holder:
        return "another process"
    group = f" (rank 0 of {holder['processes']} processes)" if holder.get("processes", 1) > 1 else ""
    return f"pid {holder['pid']}{group} on {holder['host']} since {holder['since']}"


def trainer(run_dir: str | Path) -> str | None:
    """Who trains in run_dir right now, as far as a reader can tell without taking the lock (which would get in a
    starting trainer's way): the holder the lock file names, if that process is alive (on this host) or on
    another host. None when nobody does."""
    try:
        holder = json.loads((Path(run_dir) / NAME).read_bytes() or b"{}")
    except (OSError, ValueError):
        return None
    if "pid" not in holder:
        return None
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return None  # it died without letting go (kill -9): the OS dropped its lock
        except PermissionError:
            pass  # alive, someone else's
    return _describe(holder)
