"""Choosing the torch device from --device."""
from __future__ import annotations

import torch

from .errors import UsageError


def pick_device(name: str) -> torch.device:
    """auto: CUDA, else Apple's MPS, else the CPU; a named device must be present."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(name, False):
        raise UsageError(f"--device {name} is not available on this machine; use --device auto or cpu")
    return torch.device(name)
