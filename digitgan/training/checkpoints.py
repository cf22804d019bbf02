"""Checkpoints: atomic writes, the newest-usable lookup, pruning, the finiteness check and every random state.

Files are read with torch.load(weights_only=True), so a checkpoint can hold tensors and plain values but can
never run code. What happens when one cannot be used depends on why:

* damaged or refused (truncated, not a checkpoint, would run code, holds NaN/inf): `Unusable`; training sets it
  aside as *.corrupt and resumes from the one before it;
* unreadable (an I/O or permission error: the file may well be fine) or written by a newer version: UsageError,
  and nothing is touched.
"""

from __future__ import annotations

import io
import random
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.files import atomic_write, set_aside
from ..errors import UsageError

FORMAT = 1
NAME = re.compile(r"^ckpt_(\d{7,})\.pt$")
REQUIRED = ("format", "step", "config", "generator", "discriminator", "opt_g", "opt_d", "fixed_noise", "rng")
FINITE_PARTS = ("generator", "generator_ema", "discriminator", "opt_g", "opt_d")  # what NaN or inf would poison


class Unusable(ValueError):
    """The file is no checkpoint this program can use: damaged, not a checkpoint, refused, or diverged."""


def path_for(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"ckpt_{step:07d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in directory, oldest step first."""
    d = Path(directory)
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := NAME.match(p.name))] if d.is_dir() else []
    return [p for _, p in sorted(found)]


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


def nonfinite(state: dict[str, Any]) -> list[str]:
    """The parts of a checkpoint state (networks, weight average, optimizer moments) holding NaN or inf."""
    parts = [p for p in FINITE_PARTS if p in state]
    checks = [(i, t.isfinite().all()) for i, p in enumerate(parts) for t in _tensors(state[p]) if t.is_floating_point()]
    ok = [True] * len(parts)
    for device in {flag.device for _, flag in checks}:  # Adam keeps its step count on the CPU: a read-back per device
        here = [(i, flag) for i, flag in checks if flag.device == device]
        for (i, _), fine in zip(here, torch.stack([flag for _, flag in here]).tolist()):
            ok[i] = ok[i] and fine
    return [p for p, fine in zip(parts, ok) if not fine]


def save(directory: str | Path, state: dict[str, Any], keep: int) -> Path:
    """Write state as the checkpoint of its step, then delete all but the newest `keep` checkpoints.

    The caller checks nonfinite(state) first (the loop does, before it evaluates or draws a grid), so that a
    checkpoint on disk is always one to resume from."""
    path = save_as(path_for(directory, state["step"]), state)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink()
    return path


def save_as(path: Path, state: dict[str, Any]) -> Path:
    """Write state as a checkpoint file at path (atomically: the file is the old one or the new one)."""
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f))
    return path


def _refusal(e: Exception) -> str:
    """torch's load error in one line, without its advice to load with weights_only=False."""
    text = str(e)
    if m := re.search(r"GLOBAL ([\w.]+)", text):
        return f"the file would have run code ({m.group(1)}) when loaded, and was refused"
    if isinstance(e, RuntimeError) and "zip archive" in text:
        return "truncated or damaged (its zip archive is incomplete)"
    return "not a checkpoint (its contents do not unpickle)"


def load(path: str | Path) -> dict[str, Any]:
    """Read one checkpoint (weights only: no code can run).

    Raises Unusable for a damaged, refused or diverged file; UsageError for an unreadable one or a newer format.
    """
    try:
        data = Path(path).read_bytes()  # I/O errors here, apart from what the file holds
    except FileNotFoundError:
        raise  # pruned by a trainer since it was listed (load_latest lists again)
    except OSError as e:
        raise UsageError(
            f"cannot read the checkpoint {path} ({e.strerror}); nothing was changed: check the disk "
            f"and the file's permissions, then run again"
        ) from None
    try:
        with warnings.catch_warnings():  # torch's advice on a refused file is not for our users: _refusal says why
            warnings.simplefilter("ignore")
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise Unusable(f"{type(e).__name__}: {_refusal(e)}") from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED):
        raise Unusable("not a dcgan checkpoint (required entries missing)")
    if not isinstance(state["format"], int) or state["format"] < 1:
        raise Unusable(f"not a dcgan checkpoint (format {state['format']!r})")
    if state["format"] > FORMAT:
        raise UsageError(
            f"the checkpoint {path} was written by a newer dcgan (format {state['format']}; this one "
            f"reads format {FORMAT}); nothing was changed: update dcgan, or pass another "
            f"--checkpoint-dir"
        )
    if bad := nonfinite(state):
        raise Unusable(f"it holds NaN or inf in {', '.join(bad)}: its run had diverged")
    return state


def load_latest(directory: str | Path, quarantine: bool = False) -> tuple[dict[str, Any], Path] | None:
    """The newest usable checkpoint in directory, or None if there is none at all.

    Unusable ones are reported on stderr; with quarantine they are renamed to *.corrupt (kept, not deleted) so
    that a resumed run does not trip over them again. If every checkpoint is unusable: UsageError. A reader of a
    directory being trained lists it again if the trainer prunes the newest before it is read.
    """
    for _ in range(5):
        try:
            return _load_latest(Path(directory), quarantine)
        except FileNotFoundError:
            continue
    raise UsageError(f"the checkpoints in {directory}/ kept vanishing while being read: run again")


def _load_latest(directory: Path, quarantine: bool) -> tuple[dict[str, Any], Path] | None:
    candidates = list_checkpoints(directory)
    for path in reversed(candidates):
        try:
            return load(path), path
        except Unusable as e:
            note = f" (kept as {set_aside(path).name})" if quarantine else ""
            print(f"warning: skipping checkpoint {path}: {e}{note}; trying the previous one", file=sys.stderr)
    if candidates:
        raise UsageError(
            f"no usable checkpoint in {directory}/ (all {len(candidates)} failed to load); "
            f"pass another --checkpoint-dir, or --fresh --force to start over"
        )
    return None


def capture_rng() -> dict[str, Any]:
    """Python's, NumPy's and torch's global random states, as tensors and plain values."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
