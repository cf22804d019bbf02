"""Choosing the torch device from --device."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .config import TrainConfig
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


@dataclass(frozen=True)
class Speed:
    """The execution switches of a run, with every "auto" decided for its device. None changes the math."""
    channels_last: bool
    autocast: torch.dtype | None
    compile: bool
    data_on_device: bool
    noise_on_device: bool
    deterministic: bool = False

    def apply(self) -> None:
        """Set the process-wide switches: deterministic algorithms when asked for, and TF32 off either way.

        TF32 stays off because the fast path on CUDA is bf16 autocast (the default there), which already takes
        the convolutions and matrix products; whoever turns autocast off asks for float32, and TF32 would cut
        their products to a 10-bit mantissa behind their back."""
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        if self.deterministic:
            # cuBLAS is deterministic only with a fixed workspace, read when its first handle is made
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(self.deterministic)
        torch.backends.cudnn.deterministic = self.deterministic
        torch.backends.cudnn.benchmark = False  # its choice of kernels can differ from run to run
        if self.deterministic and self.compile:  # inductor: no choosing between kernels by timing them
            import torch._inductor.config as inductor
            if hasattr(inductor, "deterministic"):  # not in every torch
                inductor.deterministic = True


def speed_settings(cfg: TrainConfig, device: torch.device, distributed: bool = False) -> Speed:
    """auto: channels_last everywhere (faster on the CPU, suits tensor cores); bf16 autocast and torch.compile on
    CUDA only: compile was slower on the CPU, and bf16, though faster there, changes the rounding
    (bench/throughput.py --variants has the figures). Compile stays off under torchrun unless asked for: its
    pairing with DistributedDataParallel has not been measured on a GPU here."""
    cuda = device.type == "cuda"
    pick = lambda value, auto: auto if value == "auto" else value == "on"
    return Speed(channels_last=pick(cfg.channels_last, True),
                 autocast=torch.bfloat16 if cfg.autocast == "bf16" or (cfg.autocast == "auto" and cuda) else None,
                 compile=pick(cfg.compile, cuda and not distributed),
                 data_on_device=cfg.data_on_device == "on", noise_on_device=cfg.noise_on_device == "on",
                 deterministic=cfg.deterministic == "on")
