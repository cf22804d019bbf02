"""Checkpoints: atomic writes, the newest-readable lookup, pruning, and every random state.

Files are read with torch.load(weights_only=True), so a checkpoint can hold tensors and plain values but can
never run code. A checkpoint that cannot be read is reported and the one before it used.
"""
from __future__ import annotations

import os
import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UsageError

FORMAT = 1
NAME = re.compile(r"^ckpt_(\d{7,})\.pt$")
REQUIRED = ("format", "step", "config", "generator", "discriminator", "opt_g", "opt_d", "fixed_noise", "rng")


def path_for(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"ckpt_{step:07d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in directory, oldest step first."""
    d = Path(directory)
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := NAME.match(p.name))] if d.is_dir() else []
    return [p for _, p in sorted(found)]


def atomic_write(path: Path, write: Any) -> None:
    """Call write(file) on a temporary file beside path, fsync it, then rename over path."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # makes the rename itself durable
    finally:
        os.close(dir_fd)


def save(directory: str | Path, state: dict[str, Any], keep: int) -> Path:
    """Write state as the checkpoint of its step, then delete all but the newest `keep` checkpoints."""
    path = path_for(directory, state["step"])
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f))
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink()
    return path


def load(path: str | Path) -> dict[str, Any]:
    """Read one checkpoint (weights only: no code can run); raise ValueError if it is not a usable one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}") from e
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED):
        raise ValueError("not a dcgan checkpoint (required entries missing)")
    if state["format"] != FORMAT:
        raise ValueError(f"checkpoint format {state['format']}, this program reads format {FORMAT}")
    return state


def load_latest(directory: str | Path, quarantine: bool = False) -> tuple[dict[str, Any], Path] | None:
    """The newest readable checkpoint in directory, or None if there is none at all.

    Unreadable ones are reported on stderr; with quarantine they are renamed to *.corrupt (kept, not deleted)
    so that a resumed run does not trip over them again. If every checkpoint is unreadable: UsageError.
    """
    candidates = list_checkpoints(directory)
    for path in reversed(candidates):
        try:
            return load(path), path
        except ValueError as e:
            note = ""
            if quarantine:
                path.rename(path.with_name(path.name + ".corrupt"))
                note = f" (kept as {path.name}.corrupt)"
            print(f"warning: skipping checkpoint {path}: {e}{note}; trying the previous one", file=sys.stderr)
    if candidates:
        raise UsageError(f"no readable checkpoint in {directory}/ (all {len(candidates)} failed to load); "
                         f"pass another --checkpoint-dir, or --fresh --force to start over")
    return None


def capture_rng() -> dict[str, Any]:
    """Python's, NumPy's and torch's global random states, as tensors and plain values."""
    np_state = np.random.get_state(legacy=False)
    state = {"python": random.getstate(),
             "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                       "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                       "gauss": float(np_state["gauss"])},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "state": {"key": n["key"].numpy().astype(np.uint32),
                         "pos": n["pos"]}, "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
