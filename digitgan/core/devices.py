"""Choosing the torch device from --device, and the execution switches of a run on it (Speed): none changes the
math."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TypeVar

import torch

from ..config import TrainConfig
from ..errors import UsageError


def cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def on(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """t on the device (copied without waiting for it), itself where it is there already (no operator)."""
    return t if t.device == device else t.to(device, non_blocking=True)


def pick_device(name: str) -> torch.device:
    """auto: the accelerator torch.accelerator names (CUDA, MPS, XPU, ...), else the CPU; on a torch without
    torch.accelerator, CUDA, else Apple's MPS, else the CPU. A named device must be present."""
    if name == "auto":
        accelerator = getattr(torch, "accelerator", None)
        if accelerator is not None:
            found = accelerator.current_accelerator() if accelerator.is_available() else None
            return torch.device(found.type) if found is not None else torch.device("cpu")
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

    def place(self, *models: torch.nn.Module) -> None:
        """Put the models' weights in channels_last where these settings ask for it (in place: optimizers and copies
        made later see them so)."""
        if self.channels_last:
            for model in models:
                channels_last(model)

    def describe(self, device: torch.device) -> str:
        """What a run computes with, every auto decided, in one line (printed as training starts)."""
        where = device.type
        if device.type == "cuda":
            where = torch.cuda.get_device_name(device)
        elif device.type == "cpu":
            where = f"{torch.get_num_threads()} thread{'s' * (torch.get_num_threads() > 1)}"
        parts = [
            "bf16 autocast" if self.autocast == torch.bfloat16 else "float32",
            "channels_last" if self.channels_last else "NCHW",
            "compiled" if self.compile else "eager",
            "data on the device" if self.data_on_device else "batches copied from the host",
            "noise drawn on the device" if self.noise_on_device else "noise drawn on the host",
            *(["deterministic"] if self.deterministic else []),
        ]
        return f"{device.type} ({where}): {', '.join(parts)}"

    def apply(self) -> None:
        """Set the process-wide switches: deterministic algorithms when asked for, and TF32 off either way.

        TF32 stays off: float32 means float32 (TF32 would cut products to a 10-bit mantissa behind the user's
        back), and on an H100 it bought nothing, the default preset being bound by kernel launches (8.9 ms an
        iteration with TF32, 8.5 without: bench/results/gpu-h100-run1-throughput.jsonl)."""
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        if self.deterministic:
            # cuBLAS is deterministic only with a fixed workspace, read when its first handle is made
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if torch.are_deterministic_algorithms_enabled() != self.deterministic:
            # only on a change: the call imports Inductor's config (0.4 s of each run's start on the CPU)
            torch.use_deterministic_algorithms(self.deterministic)
        torch.backends.cudnn.deterministic = self.deterministic
        torch.backends.cudnn.benchmark = False  # its choice of kernels can differ from run to run
        if self.deterministic and self.compile:  # inductor: no choosing between kernels by timing them
            import torch._inductor.config as inductor

            if hasattr(inductor, "deterministic"):  # not in every torch
                inductor.deterministic = True


def speed_settings(cfg: TrainConfig, device: torch.device) -> Speed:
    """auto: channels_last everywhere (faster on the CPU, suits tensor cores); bf16 autocast and torch.compile
    nowhere. On the CPU compile was slower and bf16 gave a worse FID at every step (bench/throughput.py
    --variants); on an H100 the default preset is bound by launching kernels, not by arithmetic, and float32
    eager took 6.7 s to step 1,000 (FID 1.59) against 7.8 s with bf16 (FID 1.85) and 11.6 s with bf16 and compile
    (FID 1.94; bench/results/gpu-h100-run2-ttq.csv). Either is there to ask for."""
    pick = lambda value, auto: auto if value == "auto" else value == "on"
    return Speed(
        channels_last=pick(cfg.channels_last, True),
        autocast=torch.bfloat16 if cfg.autocast == "bf16" else None,
        compile=pick(cfg.compile, False),
        data_on_device=cfg.data_on_device == "on",
        noise_on_device=cfg.noise_on_device == "on",
        deterministic=cfg.deterministic == "on",
    )


def fits_on(device: torch.device, nbytes: int) -> bool:
    """Whether nbytes of training data may live on device: on a CUDA device at most half its free memory (the
    rest is the networks' and their activations'), on others always."""
    return device.type != "cuda" or nbytes <= torch.cuda.mem_get_info(device)[0] // 2


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision for forward passes in dtype (None: full precision)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


M = TypeVar("M", bound=torch.nn.Module)


def channels_last(model: M) -> M:
    """The model with its weights in channels_last (NHWC), in place."""
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack the keyword
