"""Several processes under torchrun: the process group, each process's share of the global batch, batch norm over
the global batch, and the gradients' mean over the processes.

A plain `python dcgan.py` gets World() (one process, rank 0, no group): its methods hand everything back
unchanged and nothing here touches torch.distributed. Under torchrun, even with one process, there is a process
group, batch norm takes the global batch's statistics and each update averages its network's gradients over the
processes in one all-reduce (DistributedDataParallel's math without its wrapper, whose constructor imports Dynamo,
seconds a process, and whose hooks need no_sync in G's step through D); every rank runs the same loop on the same
global batch indices and the same global noise (its streams are seeded alike) and keeps its slice, so the math is
that of one process with the whole batch, and a checkpoint (written by rank 0 only) resumes on any number of
processes.
"""

from __future__ import annotations

import datetime
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
import torch.nn as nn

from ..config import BACKENDS
from ..errors import UsageError

T = TypeVar("T")
# Words in the RuntimeErrors that gloo and NCCL raise when a peer is gone or silent
TRANSPORT_WORDS = (
    "Connection closed",
    "Connection reset",
    "Broken pipe",
    "timed out",
    "Timed out",
    "Timeout",
    "NCCL",
    "gloo",
)


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes (torchrun's RANK, WORLD_SIZE, LOCAL_RANK)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    group: bool = False  # a process group joins the processes (started by torchrun, however many)

    @property
    def main(self) -> bool:
        """Rank 0: the one process that reads the disk for setup and writes the run's files."""
        return self.rank == 0

    def lost(self, e: BaseException) -> str | None:
        """What went wrong if e is a collective's failure (another process died, or stopped answering within the
        timeout), in one line; None for anything else, and always for one process."""
        if not self.group or not isinstance(e, RuntimeError):
            return None
        text = str(e).strip()
        if not (isinstance(e, torch.distributed.DistError) or any(w in text for w in TRANSPORT_WORDS)):
            return None
        line = re.sub(r"^\[[^\]]*\]\s*", "", text.splitlines()[0] if text else type(e).__name__)  # gloo's source line
        return line.split(". ")[0]

    def share(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's rows of a global batch (the whole batch, itself, for one process)."""
        if self.size == 1:
            return batch
        n = len(batch) // self.size
        return batch[self.rank * n : (self.rank + 1) * n]

    def check_batch(self, batch_size: int, pack: int = 1) -> None:
        """Each process's share of the batch must be whole, and (--pack) a whole number of D's packs."""
        if batch_size % (self.size * pack):
            packs = f" of --pack {pack} pictures each" if pack > 1 else ""
            raise UsageError(
                f"--batch-size {batch_size} is the global batch and must divide evenly among the "
                f"{self.size} processes{packs}; pass a multiple of {self.size * pack}"
            )

    def device(self, device: torch.device) -> torch.device:
        """The device of this process: its own GPU (cuda:LOCAL_RANK) when the run is on CUDA."""
        if not self.group or device.type != "cuda":
            return device
        if self.local_rank >= torch.cuda.device_count():
            raise UsageError(
                f"process {self.local_rank} on this node has no GPU of its own ({torch.cuda.device_count()} "
                f"visible): pass --nproc_per_node {torch.cuda.device_count()} or fewer to torchrun"
            )
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    def on_main(self, fn: Callable[[], T]) -> T:
        """fn() run by rank 0 alone, its result (or the error it raised) handed to every rank: for setup that
        reads or changes the disk (moving a run aside, quarantining a bad checkpoint) while the others wait."""
        if not self.group:
            return fn()
        box: list[Any] = [None]
        if self.main:
            try:
                box[0] = (True, fn())
            except Exception as e:  # every rank raises it; only rank 0 prints it (dcgan.py)
                box[0] = (False, _portable(e))
                torch.distributed.broadcast_object_list(box, src=0, device=torch.device("cpu"))
                raise
        torch.distributed.broadcast_object_list(box, src=0, device=torch.device("cpu"))
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def main_first(self, fn: Callable[[], T]) -> T:
        """fn() on rank 0, then on the others: for reads that may fill a cache on the first call."""
        if self.main:
            value: list[T] = []
            self.on_main(lambda: value.append(fn()))  # hands the others only the news that it worked
            return value[0]
        self.on_main(fn)  # waits for rank 0 (fn is not called here)
        return fn()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over processes of each one's values (each a mean over its slice: together the global mean)."""
        if self.group:
            torch.distributed.all_reduce(values)
            values /= self.size
        return values

    def agree(self, now: bool, out_of_time: bool, signal: int | None) -> tuple[bool, int | None]:
        """(out of time, the signal that asks to stop or None) as every process will act on them: rank 0's clock
        (the others wait out its evaluations), a signal to any process. Processes compare only when `now` (a
        --log-every step), so all of them stop after the same step."""
        if not self.group:
            return out_of_time, signal
        if not now:
            return False, None
        flags = torch.tensor([int(out_of_time and self.main), signal or 0])
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        return bool(flags[0]), int(flags[1]) or None

    def finish(self) -> None:
        """Wait for the others at the end of a run that went well (rank 0 writes its last files meanwhile), so that
        no process takes its connections down while another still uses them."""
        if self.group:
            torch.distributed.barrier()

    def close(self, broken: bool = False) -> None:
        """Take the group down, unless it is broken (a process lost): then its queued collectives would each wait
        out the timeout first, so it is left for the process's end (dcgan.py ends such a process at once)."""
        if self.group and not broken and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def join(backend: str, timeout: float, device: str) -> World:
    """This process's World: one process unless started by torchrun (WORLD_SIZE > 1), then the process group,
    NCCL for CUDA tensors (gloo beside it for the small control messages on the CPU) or gloo on the CPU.
    timeout: seconds a collective waits for the other processes before it fails instead of hanging."""
    if backend not in BACKENDS:
        raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "nccl" and (device in ("cpu", "mps") or not torch.cuda.is_available()):
        raise UsageError(
            "--backend nccl needs CUDA GPUs, one per process"
            + (f", and --device is {device}" if device in ("cpu", "mps") else ", and none is visible")
            + ": pass --backend gloo (or auto) to train on the CPU"
        )
    if not timeout > 0:
        raise UsageError(f"--dist-timeout must be a positive number of seconds, not {timeout}")
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1 and "TORCHELASTIC_RUN_ID" not in os.environ:  # not started by torchrun
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")), group=True)
    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    group = "cpu:gloo,cuda:nccl" if backend == "nccl" or (backend == "auto" and cuda) else "gloo"
    torch.distributed.init_process_group(group, timeout=datetime.timedelta(seconds=timeout))
    return world


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch: sums over every process through a
    differentiable all-reduce, so gradients also flow through the other processes' share of the statistics.
    The same math as nn.BatchNorm on one process with the whole batch (two passes: the mean, then the variance
    about it, as exact as the single-process kernel). nn.SyncBatchNorm does this on GPUs only."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected a batch of at least 2 dimensions, got {x.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:  # the running statistics: nothing to share
            return super().forward(x)
        dims, shape = [0, *range(2, x.dim())], (1, -1) + (1,) * (x.dim() - 2)
        xf = x.float()  # statistics in float32 under autocast too
        n = xf.numel() // xf.shape[1] * torch.distributed.get_world_size()
        mean = _Sum.apply(xf.sum(dims)) / n
        centred = xf - mean.view(shape)
        var = _Sum.apply(centred.square().sum(dims)) / n
        assert self.running_mean is not None and self.running_var is not None and self.momentum is not None
        assert self.num_batches_tracked is not None  # global_batchnorms made it so
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / (n - 1), self.momentum)  # unbiased, like nn.BatchNorm
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


class _Sum(torch.autograd.Function):
    """The sum of a tensor over all processes. Each process's loss depends on every process's share, so the
    gradient of the sum is the sum, over processes, of the gradients that reach it: the same all-reduce, itself
    differentiable, as R1's double backward needs (a bare all_reduce there is a step autograd cannot see through,
    which left out the other processes' share of R1's gradient through batch norm's statistics)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        torch.distributed.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _Sum.apply(grad)


def global_batchnorms(model: nn.Module) -> nn.Module:
    """Replace, in place, each batch norm in model by a GlobalBatchNorm holding the very same parameters and
    buffers (optimizers and the weight average keep their references; the state_dict keeps its keys)."""
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            if child.momentum is None:
                raise ValueError("GlobalBatchNorm follows a momentum, not a cumulative average")
            bn = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine)
            if child.affine:
                bn.weight, bn.bias = child.weight, child.bias
            bn.running_mean, bn.running_var = child.running_mean, child.running_var
            bn.num_batches_tracked = child.num_batches_tracked
            bn.train(child.training)
            setattr(model, name, bn)
        else:
            global_batchnorms(child)
    return model


def synced(model: nn.Module) -> nn.Module:
    """model, in place, with global batch norm and rank 0's parameters and buffers on every process. Ranks start
    alike already (their streams are seeded alike, a checkpoint is the same file); the broadcast guarantees it.
    Gradients are averaged by the update steps (mean_over_processes)."""
    global_batchnorms(model)
    tensors = [*model.parameters(), *model.buffers()]
    with torch.no_grad():
        for t in tensors:
            flat = t.contiguous()  # a channels_last weight goes as a contiguous copy and comes back
            torch.distributed.broadcast(flat, 0)
            t.copy_(flat)
    return model


def _portable(e: Exception) -> Exception:
    """e, or where it cannot cross to another process (pickle), an error of its class's kind with its text."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return (UsageError if isinstance(e, UsageError) else RuntimeError)(str(e))


def unwrapped(module: nn.Module) -> nn.Module:
    """The eager module under torch.compile's wrapper (module itself where there is none)."""
    return cast(nn.Module, getattr(module, "_orig_mod", module))


@torch.no_grad()
def mean_over_processes(model: nn.Module) -> None:
    """Each of model's gradients replaced by its mean over torchrun's processes, all in one all-reduce; nothing
    without a process group. Each process's loss is the mean over its share of the global batch, so the mean of
    their gradients is the gradient of the whole batch's loss."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])  # logical order, whatever each gradient's memory format
    torch.distributed.all_reduce(flat)
    flat /= torch.distributed.get_world_size()
    for g, mean in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(mean.view(g.shape))
