"""For tests that run training: stopping a real process with SIGTERM, and comparing checkpoints bit for bit over
every entry two runs of the same training must share."""
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from digitgan.training import checkpoints


def same_state(a, b):
    """Bit-for-bit equality of two nested checkpoint states (tensors, dicts, lists, numbers)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b))
    return a == b


def training_state(path, *differing):
    """Every entry of a checkpoint except those that must differ between two runs of the same training: the wall
    time (`elapsed`), and in the config the directories the runs wrote to plus the `differing` flags the test
    set apart on purpose."""
    s = checkpoints.load(path)
    del s["elapsed"]
    s["config"] = {k: v for k, v in s["config"].items() if k not in ("checkpoint_dir", "sample_dir", *differing)}
    return s


def cli_flags(overrides):
    """Training overrides as command-line flags: {"batch_size": 8} -> ["--batch-size", "8"]."""
    return [a for k, v in overrides.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def train_until_sigterm(run, *flags, rows=4, sig=signal.SIGTERM, ready=None):
    """`dcgan.py train` as a real process with run's directories and small-run settings plus flags (which win over
    those), toward 100,000 steps; SIGTERM (or sig) once its CSV has `rows` lines, or once ready() holds. Each look
    is taken while the process is paused (SIGSTOP), so that what was seen is still so when the signal lands,
    however busy the machine. Returns (exit code, stderr)."""
    cmd = [sys.executable, str(Path(__file__).resolve().parent.parent / "dcgan.py"), "train", "--steps", "100000",
           "--checkpoint-every", "100000",
           *cli_flags({k: run[k] for k in ("batch_size", "log_every", "sample_every", "width", "checkpoint_dir",
                                           "sample_dir", "cache_dir", "device", "eval_every", "tensorboard")}),
           *flags]
    csv_path = Path(run["checkpoint_dir"]) / "metrics.csv"
    ready = ready or (lambda: csv_path.exists() and len(csv_path.read_text().splitlines()) >= rows)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        paused_when(proc, ready)
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def paused_when(proc, condition, timeout=120):
    """Return with proc stopped (SIGSTOP) at a moment when condition() holds; between looks it runs on."""
    deadline = time.monotonic() + timeout
    while True:
        proc.send_signal(signal.SIGSTOP)
        wait_for(lambda: _state(proc.pid) in ("T", "t", "Z", None))  # stopped (or gone: the next check says so)
        if condition():
            return
        proc.send_signal(signal.SIGCONT)
        assert proc.poll() is None, f"the trainer ended first: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _state(pid):
    """A process's state letter from /proc (T: stopped), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def snapshot(directory):
    """Every file under directory, by path, with its bytes: to show that a command changed nothing."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def wait_for(condition, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def copy_run(run, dest):
    """A copy of a trained run's directories under dest, and its overrides pointing there (to change it freely)."""
    import shutil
    moved = {k: str(Path(dest) / Path(run[k]).name) for k in ("checkpoint_dir", "sample_dir")}
    for k, to in moved.items():
        shutil.copytree(run[k], to, symlinks=True)
    return {**run, **moved}


def once(tmp_path_factory, name, build):
    """A directory that build(directory) fills once per test session, however many pytest-xdist workers ask for it:
    the first to ask builds it under a file lock while the others wait, then all of them read it."""
    import fcntl
    import os
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' base directories sit side by side in one session directory
    d = root / name
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (d / ".built").exists():
            d.mkdir(exist_ok=True)
            build(d)
            (d / ".built").touch()
    return d


# The kinds of model `exported` (conftest.py) trains and exports: tests/test_export.py checks each against
# onnxruntime, tests/test_site.py serves two of them to a browser
EXPORT_KINDS = {"dcgan": {}, "seed": dict(preset="seed", width=4, batch_size=8, steps=4),
                # long enough for the class to change the digits by more than the 2 grey levels the page test allows
                "conditional": dict(conditional="on", steps=40, batch_size=16, sample_every=20, checkpoint_every=20),
                "spectral-norm": dict(conditional="on", spectral_norm="both")}  # baked into plain weights on export
