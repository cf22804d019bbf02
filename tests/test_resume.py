"""Flags typed on a resume take effect from the resumed step on, and are what the run's records say; the ones
a run is born with are refused."""
import json

import pytest
import torch

from digitgan.training import checkpoints
from digitgan.errors import UsageError
from digitgan.training.loop import train


def _resume(tmp_path, **flags):
    """Resume the run in tmp_path/ck with only these flags typed; return the new checkpoint's state."""
    return checkpoints.load(train({"checkpoint_dir": str(tmp_path / "ck"), **flags}))


def _groups(state, opt):
    (group,) = state[opt]["param_groups"]
    return group


@pytest.mark.parametrize("flag,value,read", [
    ("lr_d", 1e-4, lambda s: [_groups(s, "opt_d")["lr"]]),
    ("lr_g", 3e-4, lambda s: [_groups(s, "opt_g")["lr"]]),
    ("beta1", 0.9, lambda s: [_groups(s, o)["betas"][0] for o in ("opt_d", "opt_g")]),
    ("beta2", 0.99, lambda s: [_groups(s, o)["betas"][1] for o in ("opt_d", "opt_g")]),
])
def test_learning_rates_and_betas_typed_on_resume_reach_adam(tiny, tmp_path, flag, value, read):
    before = checkpoints.load(train(tiny(steps=2)))
    assert all(v != value for v in read(before))
    after = _resume(tmp_path, steps=4, **{flag: value})
    assert read(after) == [value] * len(read(after))  # what Adam's last update used
    assert after["config"][flag] == value  # and what the record says
    assert json.loads((tmp_path / "ck" / "config.json").read_text())[flag] == value


def test_lr_decay_typed_on_resume_rules_the_rate_both_ways(tiny, tmp_path):
    decayed = checkpoints.load(train(tiny(steps=4, lr_decay=0.5)))
    lr = decayed["config"]["lr_d"]
    assert _groups(decayed, "opt_d")["lr"] == pytest.approx(lr / 2)  # last update at step 3 of 4: 1/2
    # dropping the decay on resume puts the full rate back (Adam's saved state held the decayed one)
    constant = _resume(tmp_path, steps=6, lr_decay=0.0)
    assert _groups(constant, "opt_d")["lr"] == _groups(constant, "opt_g")["lr"] == lr
    # and turning it on again decays from the resumed step: step 7 of 8 over the last 4 steps is 1/4
    again = _resume(tmp_path, steps=8, lr_decay=0.5)
    assert _groups(again, "opt_g")["lr"] == pytest.approx(lr / 4)


def _averaged(before, after_g, weight):
    return {k: torch.lerp(v, after_g[k], weight) if v.is_floating_point() else after_g[k] for k, v in before.items()}


def _close(a, b):
    return all(torch.allclose(a[k].float(), b[k].float(), atol=1e-7) for k in a)


def test_ema_decay_typed_on_resume_is_the_one_averaging(tiny, tmp_path):
    before = checkpoints.load(train(tiny(steps=2)))
    after = _resume(tmp_path, steps=3, ema=0.1)
    # the update of step index 2 weighs the new generator by 1 - min(decay, 3/12): 0.9 for 0.1, 0.75 for 0.999
    assert _close(after["generator_ema"], _averaged(before["generator_ema"], after["generator"], 0.9))
    assert not _close(after["generator_ema"], _averaged(before["generator_ema"], after["generator"], 0.75))


def test_ema_turned_on_or_off_on_resume(tiny, tmp_path):
    plain = checkpoints.load(train(tiny(steps=2, ema=0.0)))
    assert "generator_ema" not in plain
    on = _resume(tmp_path, steps=3, ema=0.1)  # starts from the generator as it was at the checkpoint
    assert _close(on["generator_ema"], _averaged(plain["generator"], on["generator"], 0.9))
    off = _resume(tmp_path, steps=4, ema=0.0)
    assert "generator_ema" not in off and off["config"]["ema"] == 0.0


@pytest.mark.parametrize("flag,value,expect", [
    # from step 2 (batch 8, one D and one G step so far per iteration) to step 4
    ("d_steps", 2, dict(d_updates=2 + 2 * 2, g_updates=4, drawn=8 * (2 + 2 * 2))),
    ("g_steps", 3, dict(d_updates=4, g_updates=2 + 2 * 3, drawn=8 * 4)),
    ("batch_size", 16, dict(d_updates=4, g_updates=4, drawn=8 * 2 + 16 * 2)),
])
def test_step_counts_and_batch_size_typed_on_resume_take_effect(tiny, tmp_path, flag, value, expect):
    train(tiny(steps=2))
    s = _resume(tmp_path, steps=4, **{flag: value})
    assert s["opt_d"]["state"][0]["step"].item() == expect["d_updates"]
    assert s["opt_g"]["state"][0]["step"].item() == expect["g_updates"]
    assert s["rng"]["sampler"]["pos"] == expect["drawn"]  # images drawn by the sampler (one epoch is 60,000)
    assert s["config"][flag] == value


def test_a_different_seed_on_resume_is_refused_the_same_one_is_fine(tiny, tmp_path):
    train(tiny(steps=2))
    with pytest.raises(UsageError, match="--seed 0, not 1"):
        train(tiny(steps=4, seed=1))
    assert checkpoints.load(train(tiny(steps=4, seed=0)))["step"] == 4
