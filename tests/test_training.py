import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from digitgan import checkpoints
from digitgan.errors import TrainingStopped, UsageError
from digitgan.training import train

ROOT = Path(__file__).resolve().parent.parent


def _same_state(a, b):
    """Bit-for-bit equality of two nested checkpoint states (tensors, dicts, lists, numbers)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return a == b


def _training_state(path):
    s = checkpoints.load(path)
    return {k: s[k] for k in ("step", "generator", "discriminator", "opt_g", "opt_d", "fixed_noise")} | \
        {"rng": {k: v for k, v in s["rng"].items()}}


def test_short_run_writes_grid_checkpoint_csv_and_plot(tiny, tmp_path):
    last = train(tiny())
    ck = tmp_path / "ck"
    assert last == ck / "ckpt_0000004.pt"
    assert [p.name for p in checkpoints.list_checkpoints(ck)] == ["ckpt_0000002.pt", "ckpt_0000004.pt"]
    state = checkpoints.load(last)
    assert state["step"] == 4 and state["config"]["batch_size"] == 8 and state["fixed_noise"].shape == (64, 100)
    assert {"python", "numpy", "torch", "noise", "sampler"} <= set(state["rng"])
    grid = Image.open(tmp_path / "samples" / "step_0000004.png")
    assert grid.size == (8 * 34 + 2, 8 * 34 + 2)
    rows = list(csv.DictReader(open(ck / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(0 < float(r["d_real"]) < 1 and float(r["d_loss"]) > 0 for r in rows)
    assert (ck / "losses.png").stat().st_size > 1000 and (ck / "config.json").exists()


def test_keep_prunes_old_checkpoints(tiny, tmp_path):
    train(tiny(steps=6, checkpoint_every=1, keep=2))
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path / "ck")] == ["ckpt_0000005.pt", "ckpt_0000006.pt"]


def test_resume_is_bit_identical_to_a_straight_run(tiny, tmp_path):
    # one D step and two G steps per iteration, as the seed schedule does
    straight = train(tiny(steps=6, checkpoint_every=3, g_steps=2, checkpoint_dir=str(tmp_path / "a"),
                          sample_dir=str(tmp_path / "sa")))
    train(tiny(steps=3, g_steps=2, checkpoint_dir=str(tmp_path / "b"), sample_dir=str(tmp_path / "sb")))
    resumed = train({"steps": 6, "checkpoint_dir": str(tmp_path / "b")})  # everything else from the checkpoint
    assert _same_state(_training_state(straight), _training_state(resumed))
    assert (tmp_path / "sa" / "step_0000006.png").read_bytes() == (tmp_path / "sb" / "step_0000006.png").read_bytes()
    # and a different seed really does give different weights, so the comparison can fail
    other = train(tiny(steps=6, g_steps=2, seed=1, checkpoint_dir=str(tmp_path / "c")))
    assert not _same_state(_training_state(straight)["generator"], _training_state(other)["generator"])


def test_lr_decay_falls_linearly_to_zero_and_resumes_exactly(tiny, tmp_path):
    last = train(tiny(steps=6, checkpoint_every=3, lr_decay=0.5))
    state = checkpoints.load(last)
    # steps 0-3 at the full rate, then 2/3 and 1/3 of it: the last update ran at a third
    assert state["opt_g"]["param_groups"][0]["lr"] == pytest.approx(state["config"]["lr_g"] / 3)
    assert state["opt_d"]["param_groups"][0]["lr"] == pytest.approx(state["config"]["lr_d"] / 3)
    final = _training_state(last)
    last.unlink()
    resumed = train({"checkpoint_dir": str(tmp_path / "ck")})  # from step 3, where the decay has not begun
    assert _same_state(final, _training_state(resumed))
    constant = train(tiny(steps=6, checkpoint_dir=str(tmp_path / "constant")))
    assert not _same_state(final["generator"], _training_state(constant)["generator"])


def test_sigterm_saves_then_resume_matches_a_straight_run(tiny, tmp_path):
    run = tiny(checkpoint_dir=str(tmp_path / "term"), sample_dir=str(tmp_path / "s1"))
    cmd = [sys.executable, str(ROOT / "dcgan.py"), "train", "--steps", "100000", "--checkpoint-every", "100000"]
    for k in ("batch_size", "log_every", "width", "checkpoint_dir", "sample_dir", "cache_dir", "device"):
        cmd += [f"--{k.replace('_', '-')}", str(run[k])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    csv_path = tmp_path / "term" / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not csv_path.exists() or len(csv_path.read_text().splitlines()) < 4):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "SIGTERM" in err and "resume" in err
    (saved,) = checkpoints.list_checkpoints(tmp_path / "term")
    stopped_at = checkpoints.load(saved)["step"]
    assert 3 <= stopped_at < 100000
    resumed = train({"steps": stopped_at + 2, "checkpoint_dir": str(tmp_path / "term")})
    straight = train(tiny(steps=stopped_at + 2, checkpoint_every=100000))
    assert _same_state(_training_state(straight), _training_state(resumed))


def test_corrupt_newest_checkpoint_is_reported_and_the_previous_used(tiny, tmp_path, capsys):
    first = train(tiny())
    ck = tmp_path / "ck"
    good = checkpoints.load(first)
    newest = ck / "ckpt_0000004.pt"
    newest.write_bytes(newest.read_bytes()[:5000])  # truncated, as by a crash mid-copy
    again = train(tiny())
    assert "skipping checkpoint" in capsys.readouterr().err
    assert (ck / "ckpt_0000004.pt.corrupt").exists()  # kept for inspection, not deleted
    assert _same_state(good["generator"], checkpoints.load(again)["generator"])  # redone exactly from step 2


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_load_weights_only_and_never_run_code(tiny, tmp_path, capsys):
    train(tiny())
    marker = tmp_path / "pwned"
    evil = tmp_path / "ck" / "ckpt_0000009.pt"
    torch.save({"format": 1, "payload": _Exploit(marker)}, evil)
    with pytest.raises(ValueError, match="Unpickl|Weights only"):
        checkpoints.load(evil)
    train(tiny(steps=5))  # the evil file is the newest: reported, skipped, and training resumes from step 4
    assert "skipping checkpoint" in capsys.readouterr().err
    assert not marker.exists()
    assert checkpoints.load(tmp_path / "ck" / "ckpt_0000005.pt")["step"] == 5


def test_nan_stops_with_a_message_naming_the_last_good_checkpoint(tiny, tmp_path):
    path = train(tiny())
    state = torch.load(path, weights_only=True)
    for v in state["discriminator"].values():
        if v.is_floating_point():
            v.fill_(float("nan"))
    torch.save(state, tmp_path / "ck" / "ckpt_0000005.pt")
    with pytest.raises(TrainingStopped, match="NaN.*ckpt_0000005.pt"):
        train(tiny(steps=10))
    assert not (tmp_path / "ck" / "ckpt_0000006.pt").exists()  # nothing saved after the NaN


def test_a_run_never_resumes_under_another_architecture(tiny, tmp_path):
    train(tiny())
    with pytest.raises(UsageError, match="--preset dcgan, not seed"):
        train(tiny(preset="seed"))
    with pytest.raises(UsageError, match="--width 8, not 16"):
        train(tiny(width=16))


def test_fresh_refuses_a_used_dir_unless_forced_and_keeps_the_old_run(tiny, tmp_path):
    train(tiny())
    with pytest.raises(UsageError, match="--force"):
        train(tiny(), fresh=True)
    assert len(checkpoints.list_checkpoints(tmp_path / "ck")) == 2
    train(tiny(steps=2), fresh=True, force=True)
    (moved,) = (tmp_path / "ck").glob("previous-*")
    assert sorted(p.name for p in moved.glob("ckpt_*")) == ["ckpt_0000002.pt", "ckpt_0000004.pt"]
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path / "ck")] == ["ckpt_0000002.pt"]


def test_eval_during_training_logs_quality_and_leaves_training_unchanged(tiny, tmp_path):
    plain = train(tiny(checkpoint_dir=str(tmp_path / "plain")))
    judged = train(tiny(eval_every=2, eval_num=300, checkpoint_dir=str(tmp_path / "judged")))
    assert _same_state(_training_state(plain), _training_state(judged))  # evaluation draws no training randomness
    rows = list(csv.DictReader(open(tmp_path / "judged" / "metrics.csv")))
    scored = [r for r in rows if r["fid"]]
    assert [int(r["step"]) for r in scored] == [2, 4]
    assert all(float(r["fid"]) > 0 and 0 <= float(r["recall"]) <= 1 and 1 <= int(float(r["classes_covered"])) <= 10
               for r in scored)
    assert (tmp_path / "judged" / "metrics.png").exists() and (tmp_path / "judged" / "real_reference.json").exists()
    assert not any(r["fid"] for r in csv.DictReader(open(tmp_path / "plain" / "metrics.csv")))


def test_minutes_limit_stops_and_saves(tiny, tmp_path, capsys):
    last = train(tiny(steps=10**6, minutes=0.05, checkpoint_every=10**6))
    step = checkpoints.load(last)["step"]
    assert 1 <= step < 10**6 and "time limit" in capsys.readouterr().err
