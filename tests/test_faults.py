"""One run, one writer: the run directory's lock (two real trainers; a holder killed with SIGKILL), damaged records
that never stop a resume, caches checked when read, and a terminal that shows only our own lines. (A server that
stays in its folder: tests/test_export.py.)"""
import csv
import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import dcgan
from digitgan.training import checkpoints
from digitgan.data import mnist as data
from digitgan.core.files import read_cache, write_cache
from digitgan.training.loop import train
from runs import cli_flags, copy_run, paused_when, snapshot, wait_for

DCGAN = str(Path(__file__).resolve().parent.parent / "dcgan.py")


def _ours(stderr):
    """stderr less the progress bar's redraws: what a user reads."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and "it/s" not in line
            and not re.match(r"^\s*\d+%\|", line)]


def test_a_second_trainer_is_refused_readers_work_and_a_killed_holder_leaves_no_lock(tiny, tmp_path, capsys):
    run = tiny(steps=100_000, checkpoint_every=20, sample_every=20)
    cmd = [sys.executable, DCGAN, "train", *cli_flags(run)]
    holder = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ck, samples = Path(run["checkpoint_dir"]), Path(run["sample_dir"])
        # paused (SIGSTOP) once it has a checkpoint and a grid, so that the directory holds still while we look
        paused_when(holder, lambda: bool(checkpoints.list_checkpoints(ck)) and (samples / "step_0000020.png").exists())
        before = snapshot(tmp_path)
        capsys.readouterr()
        assert dcgan.main(["train", *cli_flags(run)]) == 2  # the second trainer: this test's own process
        (line,) = _ours(capsys.readouterr().err)
        assert line.startswith(f"error: {ck}/ is being trained by pid {holder.pid} on ") and "nothing was changed" in line
        assert snapshot(tmp_path) == before
        # readers only read: they work on the run as it stands, and say it is being trained
        for argv in (["sample", "--out", str(tmp_path / "grid.png")], ["evaluate", "--num", "100"],
                     ["export", "--out", str(tmp_path / "site")]):
            assert dcgan.main([*argv, "--checkpoint-dir", str(ck)]) == 0
            assert f"note: {ck}/ is being trained right now (pid {holder.pid} " in capsys.readouterr().err, argv
        assert dcgan.main(["animate", "--sample-dir", str(samples), "--out", str(tmp_path / "now.gif")]) == 0
        assert "from step 20" in capsys.readouterr().out
    finally:
        holder.kill()  # SIGKILL, stopped or not: the OS drops its lock
        holder.communicate(timeout=60)
    # the lock file still names the killed holder, and a reader tells that no such process lives
    assert json.loads((ck / "train.lock").read_text())["pid"] == holder.pid
    capsys.readouterr()
    assert dcgan.main(["sample", "--checkpoint-dir", str(ck), "--out", str(tmp_path / "dead.png")]) == 0
    assert "being trained" not in capsys.readouterr().err
    last = checkpoints.load(checkpoints.list_checkpoints(ck)[-1])["step"]
    assert dcgan.main(["train", *cli_flags({**run, "steps": last + 2})]) == 0  # no stale lock to clear
    assert f"resuming from {ck}/ckpt_{last:07d}.pt" in capsys.readouterr().err
    # and a reader no longer sees a trainer
    assert dcgan.main(["sample", "--checkpoint-dir", str(ck), "--out", str(tmp_path / "after.png")]) == 0
    assert "being trained" not in capsys.readouterr().err


def _damage(path):
    """300 random bytes in place of a file; a folder of event files has its first file damaged that way."""
    target = sorted(path.glob("*tfevents*"))[0] if path.is_dir() else path
    original = target.read_bytes()
    target.write_bytes(np.random.default_rng(0).bytes(300))
    return target.name, original


@pytest.mark.parametrize("name", ["metrics.csv", "best.json", "real_reference.json", "config.json", "tensorboard"])
def test_a_damaged_record_is_set_aside_and_the_resume_goes_on(shared_run, tmp_path, capsys, name):
    run = copy_run(shared_run, tmp_path)
    ck = Path(run["checkpoint_dir"])
    rows_before = list(csv.DictReader(open(ck / "metrics.csv")))
    best_before = json.loads((ck / "best.json").read_text())
    damaged, _ = _damage(ck / name)
    garbage = (ck / name / damaged if name == "tensorboard" else ck / name).read_bytes()
    capsys.readouterr()
    assert checkpoints.load(train({**run, "steps": 6}))["step"] == 6
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warning.startswith(f"warning: {ck / name} is damaged (") and f"kept as {name}.corrupt" in warning
    kept = ck / f"{name}.corrupt"
    assert (kept / damaged if name == "tensorboard" else kept).read_bytes() == garbage  # kept as it was
    rows = list(csv.DictReader(open(ck / "metrics.csv")))
    if name == "metrics.csv":  # a fresh one from the checkpoint's step; the rows before it are in the .corrupt
        assert [int(r["step"]) for r in rows] == [5, 6]
    else:
        assert rows[:4] == rows_before and [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    if name == "best.json":  # made again from best.pt's own record
        assert json.loads((ck / "best.json").read_text())["step"] >= best_before["step"]
    for record in ("config.json", "best.json", "real_reference.json"):
        json.loads((ck / record).read_text())
    if name == "tensorboard":  # a fresh folder, holding the curves of the CSV up to the checkpoint, then the rest
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        acc = EventAccumulator(str(ck / "tensorboard"), size_guidance={"scalars": 0})
        acc.Reload()
        assert [e.step for e in acc.Scalars("loss/discriminator")] == [1, 2, 3, 4, 5, 6]


def test_a_changed_mnist_cache_is_noticed_and_made_again_from_the_wheel(cache_dir, tmp_path, capsys):
    (tmp_path / data.MNIST_WHEEL.file).symlink_to(Path(cache_dir) / data.MNIST_WHEEL.file)
    for name in (data.MNIST_CACHE, data.MNIST_CACHE + ".sha256"):
        shutil.copy(Path(cache_dir) / name, tmp_path)
    cache = tmp_path / data.MNIST_CACHE
    images, _ = data.MNIST.uint8("train", cache_dir=str(tmp_path))
    with np.load(cache) as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["train_images"][7, 14, 14] ^= 0xFF  # one pixel flipped
    with open(cache, "wb") as f:
        np.savez(f, **arrays)
    capsys.readouterr()
    again, _ = data.MNIST.uint8("train", cache_dir=str(tmp_path))
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (f"warning: {cache} does not match the SHA-256 recorded when it was written (it changed on "
                    f"disk): making it again from the checksummed wheel")
    assert np.array_equal(again, images)
    # made again: the next read is quiet and gives the wheel's pixels
    assert np.array_equal(data.MNIST.uint8("train", cache_dir=str(tmp_path))[0], images)
    assert capsys.readouterr().err == ""
    # a cache an older version wrote, without a record of its digest, is made again too
    cache.with_name(cache.name + ".sha256").unlink()
    data.MNIST.uint8("test", cache_dir=str(tmp_path))
    assert "has no record of its SHA-256 (an older dcgan wrote it)" in capsys.readouterr().err


def test_every_cache_is_read_only_if_it_matches_its_digest(tmp_path, capsys):
    """The mechanism behind the MNIST cache above, the evaluator's test-set features and real-data reference
    (judge.Judge) and the real-data classifier of `evaluate --cas`: all are written by write_cache and read by
    read_cache."""
    cache = tmp_path / "judge.pt"
    write_cache(cache, lambda f: torch.save({"feats": torch.arange(10.0)}, f))
    assert torch.load(io.BytesIO(read_cache(cache, "(again)")), weights_only=True)["feats"][3] == 3
    blob = bytearray(cache.read_bytes())
    blob[-30] ^= 1
    cache.write_bytes(bytes(blob))
    assert read_cache(cache, "embedding again") is None
    assert capsys.readouterr().err == (f"warning: {cache} does not match the SHA-256 recorded when it was written "
                                       f"(it changed on disk): embedding again\n")
    assert read_cache(tmp_path / "absent.pt", "(again)") is None and capsys.readouterr().err == ""


def test_the_terminal_shows_only_our_lines(tiny, tmp_path, capfd):
    """A refused checkpoint, a resume whose quality panel is still empty at a save, and an export of a conditional
    model: torch's pickle and exporter warnings (and a chart library's legend warning) used to show up here. Any warning
    that got past our code would be recorded below; the export runs as a real process, because torch's log lines
    go to the stderr it found at import time."""
    run = tiny(conditional="on", eval_every=4, eval_num=300, checkpoint_every=1)
    train({**run, "steps": 2, "eval_every": 0})
    with open(Path(run["checkpoint_dir"]) / "ckpt_0000003.pt", "wb") as f:
        pickle.dump({"not": "a checkpoint"}, f, protocol=4)
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert dcgan.main(["train", *cli_flags(run)]) == 0
        lines = _ours(capfd.readouterr().err)
    assert [str(w.message) for w in caught] == []
    assert lines[0] == (f"warning: skipping checkpoint {run['checkpoint_dir']}/ckpt_0000003.pt: UnpicklingError: not "
                        f"a checkpoint (its contents do not unpickle) (kept as ckpt_0000003.pt.corrupt); trying the "
                        f"previous one")
    ours = r"(training on|resuming from|embedding the|step \d+: FID|records:|done:)"
    assert all(re.match(ours, line) for line in lines[1:]), lines
    done = subprocess.run([sys.executable, DCGAN, "export", "--checkpoint-dir", run["checkpoint_dir"], "--out",
                           str(tmp_path / "site")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
