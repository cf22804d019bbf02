"""The stabilisers and augmentation of issue 24, each off by default: --loss hinge|rpgan, --r1 and --r2 (lazy with --r1-every),
--augment diff|ada, --spectral-norm, --mbstd. Each does what it says, and a run with all of them on resumes bit
for bit."""
import pytest
import torch

from digitgan.training import checkpoints
from digitgan.nets.augment import ADA_INTERVAL, Augmenter, Randoms, augment, cutout, translate
from digitgan.config import resolve
from digitgan.training.distributed import World
from digitgan.errors import UsageError
from digitgan.training.objective import LOSSES, gradient_penalty
from digitgan.nets.networks import DCGANDiscriminator, MinibatchStd, ProjectionDiscriminator
from digitgan.training.records import read_rows
from digitgan.training.loop import train
from runs import same_state, training_state


def test_hinge_loss_is_relu_margins_for_d_and_the_mean_logit_for_g():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-3.0, 0.0, 0.5])
    # D: mean(relu(1 - real)) + mean(relu(1 + fake)) = (0 + 0.5 + 2)/3 + (0 + 1 + 1.5)/3
    assert LOSSES["hinge"].d(real, fake).item() == pytest.approx(5 / 3)
    assert LOSSES["hinge"].g(fake, None).item() == pytest.approx(2.5 / 3)
    assert LOSSES["bce"].d(real, fake).item() != pytest.approx(5 / 3)


def test_r1_is_the_squared_gradient_norm_on_real_images_and_trains_d():
    w = torch.randn(1, 2, 3, 3, requires_grad=True)
    x = torch.randn(4, 2, 3, 3)
    penalty = gradient_penalty(lambda images: (images * w).sum((1, 2, 3)), x)  # D(x) = <w, x>: its gradient is w
    assert penalty.item() == pytest.approx(w.square().sum().item(), rel=1e-5)
    penalty.backward()
    assert torch.allclose(w.grad, 2 * w.detach())  # d|w|^2/dw: the penalty reaches D's weights


def test_augmentation_moves_cuts_and_recolours_differentiably_and_repeats_from_its_stream():
    gen = lambda: torch.Generator().manual_seed(0)
    dots = torch.zeros(32, 1, 16, 16)
    dots[:, 0, 8, 8] = 1
    moved = translate(dots, 2, Randoms(gen(), 32))
    where = [divmod(int(m.flatten().argmax()), 16) for m in moved]
    assert (moved.flatten(1).sum(1) == 1).all()  # each dot kept, on a blank background
    assert all(abs(y - 8) <= 2 and abs(x - 8) <= 2 for y, x in where)  # at most 2 pixels each way
    assert len(set(where)) > 5  # moved, and not all alike
    cut = cutout(torch.ones(32, 3, 16, 16), Randoms(gen(), 32))
    for image in cut:
        hole = image[0] == 0
        rows, cols = hole.any(1).sum().item(), hole.any(0).sum().item()
        assert hole.sum() == rows * cols and rows <= 8 and cols <= 8  # a rectangle: the square, or what of it fits
        assert torch.equal(image == 0, hole.expand(3, 16, 16))  # the same hole in every channel
    assert ((cut == 0).flatten(1).sum(1) == 3 * 8 * 8).any()  # a whole half-side square where it fits
    x = torch.rand(8, 3, 16, 16, requires_grad=True)
    out = augment(x, 1.0, gen())
    assert torch.equal(out, augment(x, 1.0, gen())) and not torch.equal(out, x)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # G learns through it
    assert torch.equal(augment(x, 0.0, gen()), x)  # p = 0: untouched


def test_processes_augment_their_shares_as_one_process_augments_the_global_batch():
    """Under torchrun each rank draws the whole batch's random numbers and keeps its rows: the same math as one
    process (not each rank's half augmented like the other's, from the same stream)."""
    x = torch.rand(8, 3, 16, 16)
    whole = Augmenter("diff", torch.device("cpu"), 0, batch_size=8)(x)
    halves = [Augmenter("diff", torch.device("cpu"), 0, 8, World(rank=r, size=2).share)(half)
              for r, half in enumerate(x.chunk(2))]
    assert torch.equal(torch.cat(halves), whole)


def test_ada_raises_p_while_d_is_sure_of_real_images_and_lowers_it_otherwise():
    ada = Augmenter("ada", torch.device("cpu"), 0, batch_size=64)
    assert ada.p.item() == 0
    for _ in range(2 * ADA_INTERVAL):
        ada.observe(torch.full((64,), 3.0))  # r_t = 1 > 0.6: overfitting
    assert ada.p.item() == pytest.approx(2 * 64 * ADA_INTERVAL / 500_000)
    for _ in range(4 * ADA_INTERVAL):
        ada.observe(torch.full((64,), -3.0))  # r_t = -1 < 0.6
    assert ada.p.item() == 0  # and never below
    assert Augmenter("diff", torch.device("cpu"), 0, 64).p.item() == 1


@pytest.mark.parametrize("loss", ["hinge", "rpgan"])
def test_a_run_with_every_option_on_logs_p_and_resumes_bit_for_bit(loss, tiny, tmp_path):
    options = dict(loss=loss, r1=1.0, r2=1.0, r1_every=2, augment="ada", spectral_norm="both", mbstd=4, batch_size=64,
                   pack=2)
    straight = train(tiny(steps=8, checkpoint_every=4, checkpoint_dir=str(tmp_path / "a"),
                          sample_dir=str(tmp_path / "sa"), **options))
    train(tiny(steps=4, checkpoint_every=4, checkpoint_dir=str(tmp_path / "b"), sample_dir=str(tmp_path / "sb"),
               **options))
    resumed = train({"steps": 8, "checkpoint_dir": str(tmp_path / "b")})
    assert same_state(training_state(straight), training_state(resumed))
    p = checkpoints.load(straight)["augment"]["p"].item()
    assert p > 0  # D is sure of MNIST's real digits from the start: p rose
    rows = read_rows(tmp_path / "a" / "metrics.csv")
    assert rows[-1]["augment_p"] == pytest.approx(p, rel=1e-6) and rows[0]["augment_p"] == 0  # p moves every 4 steps
    plain = train(tiny(steps=8, checkpoint_every=4, checkpoint_dir=str(tmp_path / "c"), sample_dir=str(tmp_path / "sc"),
                       batch_size=64))
    assert not same_state(training_state(straight)["generator"], training_state(plain)["generator"])
    assert read_rows(tmp_path / "c" / "metrics.csv")[-1]["augment_p"] == ""  # off: no column of zeros


def test_minibatch_std_tells_d_how_much_each_group_of_samples_varies():
    x = torch.randn(8, 3, 4, 4)
    out = MinibatchStd(4)(x)
    assert out.shape == (8, 4, 4, 4) and torch.equal(out[:, :3], x)
    for i in range(2):  # groups {0, 2, 4, 6} and {1, 3, 5, 7}
        want = x[i::2].var(0, unbiased=False).add(1e-8).sqrt().mean()
        assert torch.allclose(out[i::2, 3], want.expand(4, 4, 4))
    assert MinibatchStd(4)(x[:1].expand(8, 3, 4, 4))[:, 3].max() < 1e-3  # a batch of one image: no variety
    torch.manual_seed(0)
    d = DCGANDiscriminator(8, 32, 1, mbstd=4).eval()
    images = torch.randn(8, 1, 32, 32)
    changed = images.clone()
    changed[2] = torch.randn(1, 32, 32)  # in the group of samples 0, 4 and 6, not of 1, 3, 5, 7
    before, after = d(images), d(changed)
    assert not torch.allclose(before[[0, 4, 6]], after[[0, 4, 6]]) and torch.equal(before[1::2], after[1::2])
    with pytest.raises(UsageError, match="needs --preset dcgan"):
        resolve({"preset": "seed", "mbstd": 4})


def test_a_conditional_ds_minibatch_std_is_each_classs_own_spread():
    x, y = torch.randn(8, 3, 4, 4), torch.tensor([0, 1, 0, 2, 1, 0, 1, 1])  # class 2: one sample
    out = MinibatchStd(4, classes=3)(x, y)
    assert out.shape == (8, 4, 4, 4) and torch.equal(out[:, :3], x)
    for k in (0, 1):
        want = x[y == k].var(0, unbiased=False).add(1e-8).sqrt().mean()
        assert torch.allclose(out[y == k, 3], want.expand(int((y == k).sum()), 4, 4))
    assert out[3, 3].max() < 1e-3  # alone in its class: no variety
    torch.manual_seed(0)
    d = ProjectionDiscriminator(8, 3, 32, 1, mbstd=4).eval()
    images = torch.randn(8, 1, 32, 32)
    changed = images.clone()
    changed[0] = torch.randn(1, 32, 32)  # of class 0, with samples 2 and 5
    before, after = d(images, y), d(changed, y)
    assert not torch.allclose(before[[2, 5]], after[[2, 5]]) and torch.equal(before[y != 0], after[y != 0])


@pytest.mark.parametrize("conditional", ["off", "on"])
def test_spectral_norm_bounds_d_drops_its_batch_norms_and_a_baked_g_draws_the_same(conditional, tiny, tmp_path):
    from digitgan.config import resolve
    from digitgan.nets.networks import build_models, call
    from digitgan.nets.drawing import prepare_for_inference
    cfg = resolve({"spectral_norm": "both", "conditional": conditional, "width": 8})
    G, D = build_models(cfg)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in G.modules())  # G keeps its own
    x, y = torch.randn(16, 1, 32, 32), torch.arange(16) % 10 if conditional == "on" else None
    for _ in range(30):  # power iterations run in training mode
        call(D, x, y)
    conv = next(m for m in D.modules() if isinstance(m, torch.nn.Conv2d))
    assert torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2).item() == pytest.approx(1, abs=0.02)
    G.eval()
    z = torch.randn(4, cfg.z_dim)
    with torch.no_grad():
        drawn = call(G, z, y[:4] if y is not None else None)
        baked = call(prepare_for_inference(G, cfg, torch.device("cpu")), z, y[:4] if y is not None else None)
    assert torch.allclose(drawn, baked, atol=1e-5)
    with pytest.raises(Exception, match="spectral-norm"):  # a run is born with it: no changing it on resume
        train(tiny(steps=2, spectral_norm="d"))
        train({"spectral_norm": "off", "checkpoint_dir": str(tmp_path / "ck")})


def test_d_and_g_steps_augment_real_and_generated_images_alike():
    """Augmenting only the real images leaks the augmentation into G's pictures (Zhao et al. 2020)."""
    from digitgan.config import resolve
    from digitgan.nets.networks import build_models
    from digitgan.training.objective import Objective
    from digitgan.training.steps import d_update, g_update
    seen = []

    def record(images):
        seen.append("real" if images is real else "generated")
        return images
    G, D = build_models(resolve({"width": 4}))
    real, z = torch.rand(8, 1, 32, 32) * 2 - 1, torch.randn(8, 100)
    objective = Objective(augment=record)
    d_update(G, D, torch.optim.Adam(D.parameters()), real, z, objective)
    g_update(G, D, torch.optim.Adam(G.parameters()), z, objective)
    assert seen == ["real", "generated", "generated"]  # D's step: both; G's step: its pictures, through D


def test_r1_penalises_d_on_augmented_real_images_every_r1_every_steps_weighted_by_it():
    """Dreg: gamma/2 * E|grad_x D(aug(x))|^2 on the real images as D sees them (augmented), its gradients added to
    the loss's in the D step, every r1_every-th iteration and r1_every times as heavy (lazy R1)."""
    from digitgan.config import resolve
    from digitgan.nets.networks import build_models
    from digitgan.training.objective import Objective
    from digitgan.training.steps import d_update
    torch.manual_seed(0)
    G, D = build_models(resolve({"width": 4}))
    real, z = torch.rand(8, 1, 32, 32) * 2 - 1, torch.randn(8, 100)
    seen = []

    def record(images):
        seen.append("real" if torch.equal(images.detach(), real) else "generated")
        return images.flip(-1)  # an augmentation that changes what D sees
    objective = Objective(r1=2.0, r1_every=1, augment=record)
    _, once = objective.d_reg(D, real, None)
    assert seen == ["real"]  # R1 is taken on the augmented real images, as D's loss sees them
    _, lazy = Objective(r1=2.0, r1_every=4, augment=record).d_reg(D, real, None)
    assert all(torch.allclose(b, 4 * a, rtol=1e-5, atol=1e-8) for a, b in zip(once, lazy))  # weighted by the interval
    _, plain = Objective(r1=2.0, r1_every=1).d_reg(D, real, None)
    assert not all(torch.allclose(a, b) for a, b in zip(once, plain))  # the augmentation matters to it
    assert [Objective(r1=1.0, r1_every=4).reg_due(step) for step in range(9)] == [True, False, False, False] * 2 + [True]
    assert not Objective(r1=0.0, r1_every=1).reg_due(0)  # off
    opt = torch.optim.SGD(D.parameters(), lr=0.0)  # lr 0: D stays as it is between the steps
    grads = []
    for reg in (False, True):
        d_update(G, D, opt, real, z, objective, reg=reg)
        grads.append([p.grad.clone() for p in D.parameters()])
    assert all(torch.allclose(b - a, r, rtol=1e-4, atol=1e-6) for a, b, r in zip(*grads, once))  # the D step adds it
