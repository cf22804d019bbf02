"""The diversity figures and what they measure: Stacked MNIST (three digits as R, G, B: 1,000 modes) with its
mode count and KL read a channel at a time by the MNIST evaluator; the recall and coverage of each class against
that class's real images; R3GAN's relativistic pairing loss and R2; PacGAN's packing."""
import json

import pytest
import torch

import dcgan
from digitgan.data.mnist import MNIST
from digitgan.data.sources import load_dataset
from digitgan.config import resolve
from digitgan.errors import UsageError
from digitgan.nets.networks import DCGANDiscriminator
from digitgan.quality.evaluator import load_evaluator
from digitgan.quality.features import per_channel_space
from digitgan.quality.metrics import class_metrics, mode_statistics
from digitgan.training.objective import LOSSES, Objective


@pytest.fixture(scope="module")
def stacked(cache_dir):
    return load_dataset("stacked-mnist", "test", cache_dir=cache_dir)


@pytest.fixture(scope="module")
def space():
    model, record = load_evaluator("mnist")
    return per_channel_space(model, "per-channel", "mnist", 3)


def test_stacked_mnist_is_three_seeded_mnist_digits_labelled_by_their_mode(cache_dir, stacked):
    again = load_dataset("stacked-mnist", "test", cache_dir=cache_dir)
    assert torch.equal(stacked.pixels, again.pixels) and stacked.fingerprint == again.fingerprint  # seeded
    assert stacked.pixels.shape == (10_000, 3, 32, 32) and stacked.shape.classes == ()  # no classes for the GAN
    assert len(stacked.labels.unique()) >= 995  # nearly every one of the 1,000 modes in 10,000 draws
    digits, labels = MNIST.uint8("test", cache_dir=cache_dir)
    for i in range(5):  # each channel is an MNIST test digit, padded as MNIST is, and the label names all three
        mode = int(stacked.labels[i])
        for c, digit in enumerate((mode // 100, mode // 10 % 10, mode % 10)):
            found = (torch.from_numpy(digits) == stacked.pixels[i, c, 2:30, 2:30]).flatten(1).all(1)
            assert found.any() and (torch.from_numpy(labels)[found] == digit).all()
    train = load_dataset("stacked-mnist", "train", cache_dir=cache_dir)
    assert len(train) == 60_000 and not torch.equal(train.pixels[:100], stacked.pixels[:100])
    with pytest.raises(UsageError, match="--channels 0 or 3"):
        load_dataset("stacked-mnist", "test", cache_dir=cache_dir, channels=1)


def test_stacked_mnist_refuses_a_conditional_run_in_one_line(tmp_path, capsys):
    run = tmp_path / "ck"
    assert dcgan.main(["train", "--dataset", "stacked-mnist", "--conditional", "on", "--checkpoint-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "stacked-mnist has none: train it with --conditional off" in err and len(err.strip().splitlines()) == 1
    assert not run.exists()


def test_the_mode_of_a_stacked_picture_is_read_channel_by_channel(stacked, space):
    n = 1000
    feats, _ = space.embed(stacked.images[:n])
    assert feats.shape == (n, 3 * 128)
    found = space.modes(feats)
    assert (found == stacked.labels[:n]).double().mean() > 0.95  # the evaluator's ~99 % a digit, cubed
    real = mode_statistics(found, space.mode_count)
    assert real["modes"] > 580 and real["mode_kl"] < 1.0  # 1,000 draws of 1,000 modes: ~632 hit, KL ~0.6
    # a generator whose blue digit always equals its red one has at most 100 modes (a KL of at least log 10 from
    # any number of draws: 300 are enough)
    few = 300
    collapsed = stacked.images[:few].clone()
    collapsed[:, 2] = collapsed[:, 0]
    dropped = mode_statistics(space.modes(space.embed(collapsed)[0]), space.mode_count)
    assert dropped["modes"] <= 100 and dropped["mode_kl"] > 2.0
    swapped = space.modes(space.embed(stacked.images[:few].flip(1))[0])  # B, G, R: the channels' order counts
    assert (swapped == stacked.labels[:few]).double().mean() < 0.2


def test_mode_statistics_count_the_modes_hit_and_the_kl_from_uniform():
    assert mode_statistics(torch.arange(1000), 1000) == {"modes": 1000, "mode_kl": 0.0}
    half = mode_statistics(torch.arange(500).repeat(2), 1000)
    assert half["modes"] == 500 and half["mode_kl"] == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert mode_statistics(torch.zeros(10, dtype=torch.long), 1000)["mode_kl"] == pytest.approx(
        torch.log(torch.tensor(1000.0)).item()
    )


def test_class_recall_and_coverage_fall_when_each_class_is_drawn_in_one_style(judge):
    feats, labels = judge.test_feats, judge.test_labels
    half = torch.arange(len(labels)) % 2 == 0  # two halves of the real test set: as diverse as each other
    diverse = class_metrics(feats[half], None, labels[half], feats[~half], labels[~half])
    assert diverse["class_recall"] > 0.6 and diverse["least_class_coverage"] > 0.6
    # each class drawn as a few copies of one real picture of it (plus a little noise): well classified, no range
    one = torch.stack([feats[~half][labels[~half] == c][0] for c in range(10)])
    copies = one.repeat_interleave(100, 0) + 1e-3 * torch.randn(1000, feats.shape[1], dtype=feats.dtype)
    narrow = class_metrics(copies, None, torch.arange(10).repeat_interleave(100), feats[~half], labels[~half])
    assert narrow["class_recall"] < 0.1 and narrow["least_class_coverage"] < 0.1
    assert narrow["intra_fid"] > diverse["intra_fid"]
    assert len(narrow["per_class_coverage"]) == 10 and max(narrow["per_class_recall"]) < 0.2


def test_relativistic_pairing_compares_each_real_image_with_its_generated_partner():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 3.0])
    softplus = lambda v: torch.log1p(torch.exp(torch.tensor(v))).item()
    assert LOSSES["rpgan"].d(real, fake).item() == pytest.approx((softplus(-1.0) + softplus(3.0)) / 2)
    assert LOSSES["rpgan"].g(fake, real).item() == pytest.approx((softplus(1.0) + softplus(-3.0)) / 2)
    assert LOSSES["rpgan"].g_sees_real
    shifted = LOSSES["rpgan"].d(real + 5, fake + 5).item()  # only differences count
    assert shifted == pytest.approx(LOSSES["rpgan"].d(real, fake).item())


def test_r2_penalises_d_on_generated_images_and_r1_on_real_ones_each_with_its_gamma():
    from digitgan.config import resolve
    from digitgan.nets.networks import build_models

    torch.manual_seed(0)
    _, D = build_models(resolve({"width": 4}))
    real, fake = torch.rand(8, 1, 32, 32) * 2 - 1, torch.rand(8, 1, 32, 32) * 2 - 1
    grads = lambda **gammas: Objective(**gammas).d_reg(D, real, None, fake, None)[1]
    r1, r2, both = grads(r1=2.0), grads(r2=3.0), grads(r1=2.0, r2=3.0)
    on_fake = Objective(r1=3.0).d_reg(D, fake, None)[1]  # R2 is R1's penalty taken on the generated images
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-8) for a, b in zip(r2, on_fake))
    assert all(torch.allclose(a + b, c, rtol=1e-4, atol=1e-7) for a, b, c in zip(r1, r2, both))
    assert Objective(r2=1.0, r1_every=4).reg_due(0) and not Objective(r2=1.0, r1_every=4).reg_due(1)


@pytest.mark.heavy(3)  # embeds Stacked MNIST's test set and reference, three channels each, on a fresh cache
def test_a_stacked_mnist_run_with_rpgan_reports_modes_in_training_and_in_evaluate(tiny, tmp_path, capsys):
    flags = tiny(dataset="stacked-mnist", loss="rpgan", r1=0.1, r2=0.1, r1_every=2, steps=4, eval_every=4,
                 eval_num=200)
    args = [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()]
    assert dcgan.main(["train", *args]) == 0
    rows = (tmp_path / "ck" / "metrics.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    assert 1 <= float(last[header.index("modes")]) <= 200 and float(last[header.index("mode_kl")]) > 0
    out = tmp_path / "eval.json"
    assert dcgan.main(["evaluate", "--checkpoint-dir", str(tmp_path / "ck"), "--num", "300", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["features"].startswith("mnist-evaluator-per-channel:") and 1 <= result["modes"] <= 300
    ref = result["real_reference"]
    assert ref["num_samples"] == 10_000 and ref["modes"] >= 995 and ref["mode_kl"] < 0.1  # real data, same space
    table = capsys.readouterr().out
    assert "modes" in table and "mode_kl" in table


def test_fake_labels_data_draws_g_classes_in_the_training_sets_proportions():
    from digitgan.config import resolve
    from digitgan.core.devices import speed_settings
    from digitgan.data.shape import Shape
    from digitgan.training.state import TrainState

    def drawn(fake_labels, counts=(300, 0, 2700)):
        cfg = resolve({"conditional": "on", "fake_labels": fake_labels, "width": 4, "batch_size": 3000})
        state = TrainState(cfg, torch.device("cpu"), speed_settings(cfg, torch.device("cpu")), 3000,
                           Shape(32, 1, ("a", "b", "c")), class_counts=torch.tensor(counts))
        return torch.bincount(state.noise()[1], minlength=3) / 3000
    for mode in ("data", "auto"):  # auto: data, as the classes are far from balanced
        share = drawn(mode)
        assert share[1] == 0 and share[0] == pytest.approx(0.1, abs=0.02) and share[2] == pytest.approx(0.9, abs=0.02)
    assert drawn("uniform").min() > 0.3  # each class a third
    assert drawn("auto", (1000, 1900, 1000)).min() > 0.3  # balanced within a factor of two (MNIST): uniform


def test_augment_auto_is_ada_for_the_emoji_and_folders_and_off_for_the_digits(tmp_path):
    from digitgan.config import resolve
    from digitgan.data.sources import augmentation

    auto = lambda **flags: augmentation(resolve(flags))
    assert auto(dataset="emoji") == "ada" and auto(dataset=str(tmp_path)) == "ada"
    assert auto() == auto(dataset="fashion-mnist") == auto(dataset="stacked-mnist") == "off"
    assert auto(dataset=str(tmp_path), preset="seed") == "off"  # the 2019 network as it was
    assert auto(dataset="emoji", augment="off") == "off" and auto(augment="diff") == "diff"  # said outright: kept


def test_pack_has_d_judge_each_run_of_consecutive_pictures_as_one_input():
    torch.manual_seed(0)
    d = DCGANDiscriminator(8, 32, 3, pack=2).eval()
    images = torch.randn(8, 3, 32, 32)
    logits = d(images)
    assert logits.shape == (4,)  # one logit a pack
    pairs = torch.stack([images[0::2], images[1::2]], 1).reshape(4, 6, 32, 32)  # pictures 2k and 2k+1, RGB, RGB
    assert torch.allclose(logits, d.net(pairs).view(-1))
    changed = images.clone()
    changed[5] = torch.randn(3, 32, 32)  # in the pack of pictures 4 and 5 only
    after = d(changed)
    assert after[2] != logits[2] and torch.equal(after[[0, 1, 3]], logits[[0, 1, 3]])
    for flags, why in (
        ({"pack": 2, "conditional": "on"}, "unconditional runs only"),
        ({"pack": 3}, "must be a multiple of --pack 3"),
        ({"pack": 2, "preset": "seed"}, "needs --preset dcgan"),
        ({"pack": 0}, "positive integer"),
    ):
        with pytest.raises(UsageError, match=why):
            resolve(flags)
