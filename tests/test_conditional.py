"""Class-conditional runs: the flag, labels through training and resume, the 10x10 grid, sampling by class, and
metrics that catch a generator ignoring its label."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dcgan
import digitgan
from digitgan.training import checkpoints
from digitgan.config import resolve
from digitgan.data.sources import load_dataset
from digitgan.errors import UsageError
from digitgan.quality.judge import format_table
from digitgan.nets.drawing import Generator, class_labels
from digitgan.training.loop import train
from runs import cli_flags

FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_the_seed_preset_refuses_conditional(tmp_path, cache_dir, capsys):
    assert dcgan.main(["train", "--preset", "seed", "--conditional", "on", "--checkpoint-dir", str(tmp_path / "ck"),
                       "--cache-dir", cache_dir]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --conditional on needs --preset dcgan: the seed preset is the 2019 network as it was"


def test_conditional_is_part_of_a_runs_identity(tiny, tmp_path):
    train(tiny(steps=2))
    with pytest.raises(UsageError, match="--conditional off, not on"):
        train(tiny(steps=4, conditional="on"))


def test_a_conditional_grid_has_a_row_per_class_and_a_column_per_z(tiny, tmp_path):
    last = train(tiny(conditional="on"))
    z = checkpoints.load(last)["fixed_noise"]
    assert z.shape == (100, 100) and torch.equal(z.view(10, 10, 100), z[:10].expand(10, 10, 100))
    assert Image.open(tmp_path / "samples" / "step_0000004.png").size == (10 * 34 + 2, 10 * 34 + 2)


def test_conditional_runs_default_to_their_own_r1_and_a_constant_rate_and_flags_still_rule():
    on, off = resolve({"conditional": "on"}), resolve({})
    assert (on.ema, on.r1, on.r1_every, on.lr_decay) == (0.995, 0.01, 16, 0)
    assert (off.ema, off.r1, off.r1_every, off.lr_decay) == (0.995, 0.1, 16, 0.5)
    assert resolve({"conditional": "on", "ema": 0.9, "r1": 0}).ema == 0.9
    assert resolve({"conditional": "on", "r1": 0}).r1 == 0


def test_a_checkpoint_of_another_network_layout_is_one_line_and_kept(tiny, tmp_path, capsys):
    """An earlier version gave the 16x16 layer a class batch norm too: its conditional checkpoints hold
    net.7.bn.*, net.7.gain and net.7.shift where this one has a plain net.7 batch norm."""
    run = tiny(conditional="on")
    last = train(run)
    state = checkpoints.load(last)
    for name in ("generator", "generator_ema"):
        g = state[name]
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            g[f"net.7.bn.{key}"] = g.pop(f"net.7.{key}")
        g["net.7.gain.weight"] = g.pop("net.7.weight").repeat(10, 1)
        g["net.7.shift.weight"] = g.pop("net.7.bias").repeat(10, 1)
    torch.save(state, last)
    before = last.read_bytes()
    capsys.readouterr()
    assert dcgan.main(["train", *cli_flags({**run, "steps": 6})]) == 2
    assert dcgan.main(["sample", "--checkpoint", str(last), "--out", str(tmp_path / "s.png")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all("does not fit the network this version of dcgan builds" in e for e in errors)
    assert "net.7" in errors[0] and "--fresh" in errors[0]
    assert last.read_bytes() == before and not (tmp_path / "s.png").exists()


def test_balanced_labels_when_no_class_is_asked_for():
    cfg = resolve({"conditional": "on"})
    counts = torch.bincount(class_labels(cfg, 64), minlength=10)
    assert counts.sum() == 64 and counts.max() - counts.min() <= 1
    assert torch.equal(class_labels(cfg, 20), torch.arange(10).repeat_interleave(2))
    assert (class_labels(cfg, 5, cls=7) == 7).all() and class_labels(resolve({}), 5) is None


def test_sample_by_class_writes_labels_and_refuses_what_it_cannot_do(tiny, tmp_path, capsys):
    assert dcgan.main(cli_flags(tiny(conditional="on"))) == 0
    ck = str(tmp_path / "ck")
    out = tmp_path / "sevens.npz"
    assert dcgan.main(["sample", "--checkpoint-dir", ck, "--class", "7", "--num", "12", "--out", str(out)]) == 0
    arrays = np.load(out)
    assert arrays["images"].shape == (12, 1, 32, 32) and (arrays["labels"] == 7).all()
    assert dcgan.main(["sample", "--checkpoint-dir", ck, "--num", "30", "--out", str(tmp_path / "all.npz")]) == 0
    assert np.bincount(np.load(tmp_path / "all.npz")["labels"]).tolist() == [3] * 10
    assert dcgan.main(["sample", "--checkpoint-dir", ck, "--class", "7", "--out", str(tmp_path / "g.png")]) == 0
    capsys.readouterr()
    assert dcgan.main(["sample", "--checkpoint-dir", ck, "--class", "sneaker", "--out", str(tmp_path / "x.png")]) == 2
    assert "mnist has the classes 0-9" in capsys.readouterr().err
    assert dcgan.main(cli_flags(tiny(checkpoint_dir=str(tmp_path / "plain")))) == 0
    capsys.readouterr()
    assert dcgan.main(["sample", "--checkpoint-dir", str(tmp_path / "plain"), "--class", "7",
                       "--out", str(tmp_path / "y.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trained without --conditional on" in err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "y.png").exists()


@pytest.mark.needs(FASHION.is_dir(), "Fashion-MNIST", "apt-get install dataset-fashion-mnist")
def test_fashion_classes_by_name(tiny, tmp_path):
    assert dcgan.main(cli_flags(tiny(conditional="on", dataset="fashion-mnist", steps=2))) == 0
    out = tmp_path / "sneakers.npz"
    assert dcgan.main(["sample", "--checkpoint-dir", str(tmp_path / "ck"), "--class", "Sneaker", "--num", "4",
                       "--out", str(out)]) == 0
    assert (np.load(out)["labels"] == 7).all()


class RealDigits(torch.nn.Module):
    """A stand-in generator that draws real test digits: of the class asked for, or (ignore=True) of a class of
    its own choosing, as a generator that ignores its label would."""

    def __init__(self, data, ignore):
        super().__init__()
        self.images, self.labels, self.ignore = data.images, data.labels, ignore
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # draw() reads the device from the parameters

    def forward(self, z, y):
        gen = torch.Generator().manual_seed(int(z[0, 0].abs().mul(1e6)))
        if self.ignore:
            y = torch.randint(10, y.shape, generator=gen)
        pick = [torch.nonzero(self.labels == c).flatten() for c in range(10)]
        return torch.stack([self.images[pick[c][torch.randint(len(pick[c]), (), generator=gen)]] for c in y.tolist()])


@pytest.mark.parametrize("ignore", [True, False])
def test_class_accuracy_catches_a_generator_that_ignores_its_label(judge, cache_dir, ignore):
    cfg = resolve({"conditional": "on"})
    asked = class_labels(cfg, 2000)
    images = Generator(RealDigits(load_dataset("mnist", "train", cache_dir=cache_dir), ignore), cfg, 0).sample(2000)
    s = judge.score(images, asked)
    if ignore:
        assert abs(s["class_accuracy"] - 0.1) < 0.03 and max(s["per_class_accuracy"]) < 0.25
        assert s["intra_fid"] > 20 * judge.reference["intra_fid"]
    else:  # real digits of the class asked for: as good as the evaluator on real data
        assert s["class_accuracy"] > judge.reference["class_accuracy"] - 0.01 and min(s["per_class_accuracy"]) > 0.97
        assert s["intra_fid"] < 3 * judge.reference["intra_fid"] + 0.5


@pytest.mark.heavy(0)  # the longest: first
def test_cas_learns_from_right_labels_and_not_from_ignored_ones(cache_dir):
    """`evaluate --cas` as digitgan.evaluate computes it: the class figures and CAS of a generator that draws the
    digits asked for, and of one that ignores the labels."""
    cfg = resolve({"conditional": "on", "cache_dir": cache_dir})
    train_set = load_dataset("mnist", "train", cache_dir=cache_dir)
    # 1,000 pictures: 2 epochs of them would be 14 steps, too few to learn from (it read 0.11); CAS trains longer
    good, bad = (digitgan.evaluate(Generator(RealDigits(train_set, ignore), cfg, 0), num=300, cas=1000)
                 for ignore in (False, True))
    assert good["cas_real"] == bad["cas_real"] > 0.9  # the same real-data classifier beside both (cached)
    assert good["cas"] > good["cas_real"] - 0.05  # right labels: about as good as training on real digits
    assert bad["cas"] < 0.3  # labels the images do not match: the classifier learns next to nothing
    assert {"class_accuracy", "per_class_accuracy", "intra_fid"} <= set(good["real_reference"])
    assert len(good["per_class_accuracy"]) == 10 and good["cas_num"] == 1000 and good["cas_epochs"] == 9
    assert "CAS" in format_table(good)


def test_evaluate_cas_refuses_an_unconditional_run(shared_run, capsys):
    assert dcgan.main(["evaluate", "--checkpoint-dir", shared_run["checkpoint_dir"], "--cas"]) == 2
    assert "--cas needs a conditional checkpoint" in capsys.readouterr().err


def test_both_conditional_networks_read_their_labels():
    from digitgan.nets.networks import build_models
    torch.manual_seed(0)
    G, D = build_models(resolve({"conditional": "on", "width": 8}))
    with torch.no_grad():  # give the class embeddings distinct values, as training would
        for m in G.modules():
            if hasattr(m, "gain"):
                m.gain.weight.normal_(1, 0.5)
                m.shift.weight.normal_(0, 0.5)
        D.embed.weight.normal_(0, 0.5)
    z, threes, sevens = torch.randn(4, 100), torch.full((4,), 3), torch.full((4,), 7)
    G.eval()
    a, b = G(z, threes), G(z, sevens)
    assert a.shape == (4, 1, 32, 32) and not torch.allclose(a, b)
    assert not torch.allclose(D(a, threes), D(a, sevens))
    assert torch.allclose(G(z[:2], threes[:2]), a[:2], atol=1e-6)  # each image depends on its own label only
