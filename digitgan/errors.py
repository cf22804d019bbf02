"""The errors users see as one line: bad input (exit code 2), a stopped run or a failed write (exit code 1)."""

from __future__ import annotations

import errno
from pathlib import Path


class UsageError(Exception):
    """Bad input from the user: a flag, a path, a dataset or a checkpoint. The message says what to do next."""


class TrainingStopped(Exception):
    """Training cannot usefully go on (NaN/inf, D has won outright, a failed write); the message names the last
    good checkpoint."""


class ProcessLost(TrainingStopped):
    """Under torchrun: another process died or stopped answering. Every surviving process reports it."""


# What a failed write most often means, in the user's words; anything else gets the system's own text.
CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file size limit was reached",
    errno.EACCES: "not writable (permission denied)",
    errno.EPERM: "not writable (operation not permitted)",
    errno.EROFS: "not writable (read-only file system)",
}


class WriteError(Exception):
    """A file could not be written (disk full, not writable, size limit). The file is as it was before, and no
    partial temporary file is left behind."""

    def __init__(self, path: str | Path, error: OSError):
        self.path, self.errno = Path(path), error.errno
        self.cause = CAUSES.get(error.errno or 0, error.strerror or str(error))
        super().__init__(f"cannot write {self.path}: {self.cause}")
