import csv
import errno
import os
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from digitgan.training import checkpoints
from digitgan.errors import TrainingStopped, UsageError
from digitgan.training.loop import train
from runs import same_state as _same_state, snapshot, training_state as _training_state



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
    train(tiny(steps=3, checkpoint_every=3, g_steps=2, checkpoint_dir=str(tmp_path / "b"),
               sample_dir=str(tmp_path / "sb")))
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


def test_a_nan_in_the_update_of_a_save_step_is_never_saved_or_called_good(tiny, tmp_path):
    train(tiny())
    # an infinite G learning rate: the last update of step 5 (a save step) makes G's weights inf/NaN, while the
    # losses read back at step 5 were computed before it and are finite
    with pytest.raises(TrainingStopped, match=r"generator.*NaN or inf by step 5; the last good checkpoint is "
                                              r".*ckpt_0000004\.pt\. Rerun with a lower --lr-d or --lr-g"):
        train(tiny(steps=10, checkpoint_every=1, lr_g=float("inf")))
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path / "ck")] == ["ckpt_0000002.pt", "ckpt_0000004.pt"]


def test_a_checkpoint_holding_nan_is_set_aside_and_the_one_before_used(tiny, tmp_path, capsys):
    path = train(tiny())
    state = torch.load(path, weights_only=True)
    for v in state["discriminator"].values():
        if v.is_floating_point():
            v.fill_(float("nan"))
    torch.save(state, tmp_path / "ck" / "ckpt_0000005.pt")  # as an older version could have saved one
    resumed = train(tiny(steps=6))
    assert "ckpt_0000005.pt: it holds NaN or inf in discriminator" in capsys.readouterr().err
    assert (tmp_path / "ck" / "ckpt_0000005.pt.corrupt").exists()
    assert checkpoints.load(resumed)["step"] == 6 and not checkpoints.nonfinite(checkpoints.load(resumed))


@pytest.mark.parametrize("how", ["eio", "directory"])
def test_an_unreadable_checkpoint_stops_the_run_and_touches_nothing(tiny, tmp_path, monkeypatch, how):
    train(tiny())
    newest = tmp_path / "ck" / "ckpt_0000004.pt"
    if how == "directory":  # a real OSError (EISDIR) from the file system
        newest.unlink()
        newest.mkdir()
    before = snapshot(tmp_path)
    if how == "eio":  # an I/O error cannot be had on demand: the read of that one file fails as a bad disk would make it
        real = Path.read_bytes
        def read_bytes(self):
            if self.name == newest.name:
                raise OSError(errno.EIO, "Input/output error")
            return real(self)
        monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(UsageError, match=r"cannot read the checkpoint .*ckpt_0000004\.pt .*nothing was changed"):
        train(tiny(steps=6))
    monkeypatch.undo()
    assert snapshot(tmp_path) == before and newest.exists()


def test_a_checkpoint_of_a_newer_format_stops_the_run_and_touches_nothing(tiny, tmp_path):
    path = train(tiny())
    state = torch.load(path, weights_only=True)
    torch.save({**state, "format": checkpoints.FORMAT + 1}, path)
    before = snapshot(tmp_path)
    with pytest.raises(UsageError, match="written by a newer dcgan .* nothing was changed: update dcgan"):
        train(tiny(steps=6))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("damage,reason", [
    (lambda p: torch.save({"format": 1, "step": 4}, p), "required entries missing"),
    (lambda p: torch.save({"format": 1, "payload": _Exploit("/nonexistent/pwned")}, p),
     r"would have run code \(posix\.system\) when loaded, and was refused"),
    (lambda p: p.write_bytes(b""), "not a checkpoint"),
])
def test_a_damaged_or_refused_checkpoint_is_set_aside_with_its_reason(tiny, tmp_path, capsys, damage, reason):
    train(tiny())
    damage(tmp_path / "ck" / "ckpt_0000004.pt")
    assert checkpoints.load(train(tiny(steps=5)))["step"] == 5  # redone from step 2
    err = capsys.readouterr().err
    assert re.search(f"skipping checkpoint .*ckpt_0000004.pt: .*{reason}", err), err
    assert "weights_only" not in err  # torch's advice to load it anyway is not passed on
    assert (tmp_path / "ck" / "ckpt_0000004.pt.corrupt").exists()


def test_a_row_cut_short_in_metrics_csv_does_not_stop_a_resume(tiny, tmp_path):
    train(tiny())
    csv_path = tmp_path / "ck" / "metrics.csv"
    with open(csv_path, "a") as f:
        f.write("5,0.8,1.2e")  # a full disk cut the append short
    train(tiny(steps=6))
    assert [int(r["step"]) for r in csv.DictReader(open(csv_path))] == [1, 2, 3, 4, 5, 6]


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
    # evaluation draws no training randomness (it only adds the best FID so far)
    plain_state, judged_state = (_training_state(p, "eval_every", "eval_num") for p in (plain, judged))
    assert plain_state.pop("best") is None and judged_state.pop("best")["step"] in (2, 4)
    assert _same_state(plain_state, judged_state)
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


def test_a_rerun_with_the_time_budget_spent_trains_nothing(tiny, tmp_path, capsys):
    last = train(tiny(steps=10**6, minutes=0.02, checkpoint_every=10**6))
    step = checkpoints.load(last)["step"]
    capsys.readouterr()
    before = snapshot(tmp_path)
    assert train({"checkpoint_dir": str(tmp_path / "ck")}) == last  # --minutes 0.02 comes from the checkpoint
    assert "the time budget of 0.02 minutes is spent" in capsys.readouterr().err
    assert snapshot(tmp_path) == before  # nothing trained, nothing written
    # a larger budget trains on (one ample enough for a loaded machine, with the steps as the limit that ends it)
    more = train({"checkpoint_dir": str(tmp_path / "ck"), "minutes": 10, "steps": step + 2})
    assert checkpoints.load(more)["step"] == step + 2


def test_the_trainers_adam_steps_as_torch_optims_foreach_adam_bit_for_bit_and_loads_its_state():
    from digitgan.config import resolve
    from digitgan.nets.networks import build_models
    from digitgan.training.adam import Adam
    torch.manual_seed(0)
    _, ours = build_models(resolve({"conditional": "on", "width": 8, "mbstd": 4}))  # Embedding, conv and BN tensors
    theirs = [p.detach().clone().requires_grad_() for p in ours.parameters()]
    params = list(ours.parameters())
    a, b = Adam(params, lr=2e-3, betas=(0.5, 0.999)), torch.optim.Adam(theirs, lr=2e-3, betas=(0.5, 0.999), foreach=True)
    gen = torch.Generator().manual_seed(1)
    for step in range(6):
        for opt in (a, b):
            opt.param_groups[0]["lr"] = 2e-3 * (1 - step / 10)  # as the schedule sets it
        grads = [torch.randn(p.shape, generator=gen) for p in params]
        for i, (p, q) in enumerate(zip(params, theirs)):
            if not (step < 2 and i == 0):  # the first tensor gets no gradient for two steps: left as it was
                p.grad, q.grad = grads[i].clone(), grads[i].clone()
        a.step(), b.step()
        a.zero_grad(), b.zero_grad()
        assert all(torch.equal(p, q) for p, q in zip(params, theirs))
    mine, torchs = a.state_dict(), b.state_dict()
    assert mine["state"][0]["step"].item() == 4 and mine["state"][1]["step"].item() == 6
    assert mine["param_groups"][0].keys() == torchs["param_groups"][0].keys()
    assert all(torch.equal(mine["state"][i][k], torchs["state"][i][k]) for i in torchs["state"] for k in torchs["state"][i])
    fresh = Adam(theirs, lr=0.0, betas=(0.9, 0.9))
    fresh.load_state_dict(torchs)  # a checkpoint torch.optim wrote goes on in ours
    for p, q in zip(params, theirs):
        p.grad, q.grad = torch.ones_like(p), torch.ones_like(q)
    a.step(), fresh.step()
    assert all(torch.equal(p, q) for p, q in zip(params, theirs))
