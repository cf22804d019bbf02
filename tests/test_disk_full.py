"""A full disk, an over-limit file or an unwritable directory: one line naming the file, the cause and the last
good checkpoint; no traceback, no partial file left, no checkpoint lost.

Two real ways to make writes fail: RLIMIT_FSIZE in a child process (writes past the limit fail with EFBIG;
Python ignores SIGXFSZ), which needs nothing; and a small tmpfs (ENOSPC, the issue's case), which needs root to
mount. CI runs as root, so neither kind is skipped there."""
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import dcgan
from digitgan.training import checkpoints
from digitgan.data.mnist import MNIST_WHEEL
from digitgan.errors import TrainingStopped
from digitgan.training.loop import train
from runs import cli_flags

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 1_000_000  # bytes: above every record of a width-8 run (< 40 kB), below its checkpoints (1.7 MB)


def _limited(argv, limit=LIMIT):
    """Run dcgan.py in a child process whose files may not grow past `limit` bytes."""
    def set_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return subprocess.run([sys.executable, str(ROOT / "dcgan.py"), *argv], preexec_fn=set_limit,
                          capture_output=True, text=True, timeout=300)


def _leftovers(*dirs):
    return [p.name for d in dirs for p in d.iterdir() if ".tmp" in p.name]


def _same_weights(a, b):
    return all(torch.equal(a[part][k], b[part][k]) for part in ("generator", "discriminator") for k in a[part])


def test_a_checkpoint_over_the_size_limit_is_one_line_exit_1_and_loses_nothing(tiny, tmp_path):
    ck = tmp_path / "ck"
    good = train(tiny(steps=2))
    good_bytes = good.read_bytes()
    done = _limited(cli_flags(tiny(steps=4)))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "inline_container" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == (f"training stopped: cannot write {ck}/ckpt_0000004.pt: the file size limit was reached; the "
                    f"last good checkpoint is {good}. Free some space in {ck}/ (or make it writable), then run the "
                    f"same command again to resume"), last
    assert _leftovers(ck) == [] and good.read_bytes() == good_bytes
    assert checkpoints.list_checkpoints(ck) == [good]
    # the rerun, with room again, resumes from it and lands exactly where an uninterrupted run does
    resumed = checkpoints.load(train(tiny(steps=4)))
    straight = checkpoints.load(train(tiny(steps=4, checkpoint_dir=str(tmp_path / "straight"))))
    assert _same_weights(resumed, straight)


def test_the_mnist_cache_is_written_whole_or_not_at_all(cache_dir, tmp_path):
    shutil.copy(Path(cache_dir) / MNIST_WHEEL.file, tmp_path / MNIST_WHEEL.file)  # no download: only the cache is written
    done = _limited(["data", "--cache-dir", str(tmp_path)])
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (f"error: cannot write {tmp_path}/mnist.npz: the file size limit "
                                                    f"was reached; nothing else was changed")
    assert sorted(p.name for p in tmp_path.iterdir()) == [MNIST_WHEEL.file]


@pytest.fixture
def tmpfs(tmp_path):
    """mount(name, size) -> a directory that is a tmpfs of that size (unmounted afterwards)."""
    mounted = []

    def mount(name, size):
        d = tmp_path / name
        d.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
                          capture_output=True).returncode:
            pytest.skip("mounting a tmpfs needs root; the file-size-limit tests above cover the same code")
        mounted.append(d)
        return d
    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], check=True)


def _fill(directory):
    """Take every free byte of the file system that holds directory."""
    with open(directory / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_disk_full_while_writing_a_checkpoint(tiny, tmpfs, tmp_path, capsys):
    ck = tmpfs("ck", "3m")  # room for one 1.7 MB checkpoint and the records, not for a second checkpoint
    assert dcgan.main(cli_flags(tiny(checkpoint_dir=str(ck)))) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(
        f"training stopped: cannot write {ck}/ckpt_0000004.pt: no space left on the device; the last good "
        f"checkpoint is {ck}/ckpt_0000002.pt. Free some space in {ck}/")
    assert _leftovers(ck) == [] and checkpoints.load(ck / "ckpt_0000002.pt")["step"] == 2
    subprocess.run(["mount", "-o", "remount,size=8m", str(ck)], check=True)  # space freed: the rerun resumes
    assert checkpoints.load(train(tiny(checkpoint_dir=str(ck))))["step"] == 4


def test_disk_full_while_drawing_a_grid(tiny, tmpfs, tmp_path):
    train(tiny(steps=2))
    samples = tmpfs("full", "64k")
    shutil.copy(tmp_path / "samples" / "real.png", samples)  # written once per sample dir; here the grids fail
    _fill(samples)
    with pytest.raises(TrainingStopped, match=rf"cannot write {samples}/step_0000004\.png: no space left on the "
                                              rf"device; the last good checkpoint is .*ckpt_0000002\.pt\."):
        train(tiny(steps=4, sample_dir=str(samples)))
    assert _leftovers(samples) == [] and checkpoints.list_checkpoints(tmp_path / "ck")[-1].name == "ckpt_0000002.pt"


def test_disk_full_when_a_resume_rewrites_the_records(tiny, tmpfs):
    ck = tmpfs("ck", "3m")
    train(tiny(steps=2, checkpoint_dir=str(ck)))
    csv_before = (ck / "metrics.csv").read_bytes()
    _fill(ck)
    with pytest.raises(TrainingStopped, match=r"cannot write .*/ck/(config\.json|metrics\.csv): no space left on the "
                                              r"device; the last good checkpoint is .*ckpt_0000002\.pt\."):
        train(tiny(steps=4, checkpoint_dir=str(ck)))
    assert _leftovers(ck) == [] and (ck / "metrics.csv").read_bytes() == csv_before


def test_disk_full_under_the_tensorboard_events(tiny, tmpfs, tmp_path):
    train(tiny(steps=2))
    board = tmpfs("ck/tensorboard", "64k")
    _fill(board)
    with pytest.raises(TrainingStopped, match=rf"cannot write {board}: no space left on the device; the last good "
                                              rf"checkpoint is .*ckpt_0000002\.pt\."):
        train(tiny(steps=4, tensorboard="on"))
    assert checkpoints.list_checkpoints(tmp_path / "ck")[-1].name == "ckpt_0000002.pt"
