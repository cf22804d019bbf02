"""An iteration that does not log reads nothing back from the device: no tensor becomes a Python number, list or
array on the way (each would stall a GPU's queue, and a CUDA graph cannot hold one). The guard refuses
`aten::_local_scalar_dense` at the dispatcher (item(), float(), int(), bool(), a tensor in an `if`) and, for the
conversions that on the CPU never reach the dispatcher (tolist(), numpy(), __array__), the Tensor methods themselves
for as long as it is on."""
import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from digitgan.training.distributed import World
from digitgan.training.lock import RunLock
from digitgan.training.start import start
from digitgan.training.steps import update


class HostRead(AssertionError):
    pass


class NoHostReads(TorchDispatchMode):
    """Fails on any read of a tensor's values into Python while it is on."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            raise HostRead(f"{func} (item(), float(), int() or bool() of a tensor)")
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        self._patches = contextlib.ExitStack()
        patch = self._patches.enter_context(pytest.MonkeyPatch.context())
        for name in ("tolist", "numpy", "__array__"):
            def refuse(*args, _name=name, **kwargs):
                raise HostRead(f"Tensor.{_name}()")
            patch.setattr(torch.Tensor, name, refuse)
        return super().__enter__()

    def __exit__(self, *exc):
        self._patches.close()
        return super().__exit__(*exc)


def started(tmp_path, **settings):
    """A run as `dcgan.py train` sets it up (training/start.py), ready for its first batch."""
    overrides = {"checkpoint_dir": str(tmp_path / "ck"), "sample_dir": str(tmp_path / "s"), "device": "cpu",
                 "batch_size": 16, "width": 8, **settings}
    lock = RunLock()
    try:
        return start(overrides, False, False, World(), lock)
    finally:
        lock.release()


KINDS = {
    "default": {},
    "conditional": {"conditional": "on"},
    # ADA's tally and p, lazy R1 (every 4th step) and colour at 64 pixels
    "emoji": {"dataset": "emoji", "resolution": 64, "augment": "ada", "r1": 0.01, "r1_every": 4},
}


@pytest.mark.parametrize("kind", KINDS)
def test_iterations_that_do_not_log_read_nothing_back(kind, tmp_path, cache_dir):
    run = started(tmp_path, **KINDS[kind])
    step = lambda: update(run.state, run.G_step, run.D_step, run.batches, run.objective)
    step()  # the optimizers' first step makes their moments
    with NoHostReads():
        for _ in range(8):  # every branch: ADA's adjustment and R1 come every 4th step
            step()
    assert run.state.step == 9


def test_the_guard_catches_a_planted_item_and_a_planted_tolist(tmp_path, cache_dir, monkeypatch):
    run = started(tmp_path)
    step = lambda: update(run.state, run.G_step, run.D_step, run.batches, run.objective)
    step()
    ada = run.state.augmenter
    for plant in (lambda logits: logits.mean().item(), lambda logits: logits[:2].tolist(),
                  lambda logits: bool(logits.mean() > 0)):
        monkeypatch.setattr(ada, "observe", plant)  # in the update path, after every D step
        with pytest.raises(HostRead), NoHostReads():
            step()
        monkeypatch.undo()
