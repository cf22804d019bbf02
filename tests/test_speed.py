"""The speed switches change how the math runs, never what it computes; the weight average and inference
preparation keep the generator's function."""
import copy

import pytest
import torch

from digitgan.config import resolve
from digitgan.core.devices import Speed, pick_device, speed_settings
from digitgan.data.sources import load_dataset
from digitgan.errors import UsageError
from digitgan.nets.drawing import prepare_for_inference
from digitgan.nets.networks import build_models, sample_noise
from digitgan.training import checkpoints
from digitgan.training.loop import train
from digitgan.training.objective import Objective
from digitgan.training.state import Averager, TrainState
from digitgan.training.steps import Batches, d_update, g_update, gradient_norm, prepare, update

PLAIN = Speed(channels_last=False, autocast=None, compile=False, data_on_device=True, noise_on_device=True)


def _one_update_each(speed, cache_dir, preset="dcgan", compile_generator=False):
    """Losses and gradients of one D step and one G step from fixed weights and batches."""
    cfg = resolve({"preset": preset, "width": 8, "batch_size": 16})
    torch.manual_seed(0)
    G, D = build_models(cfg)
    speed.place(G, D)
    G_step, D_step = prepare(G, D, speed)
    if compile_generator:
        G_step = torch.compile(G)
    real = load_dataset("mnist", "train", cache_dir=cache_dir).images[:16]
    if speed.channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(1)
    objective = Objective(amp=speed.autocast)
    # lr 0: the step leaves the weights alone, so the G step sees the same D
    opt_d, opt_g = (torch.optim.SGD(m.parameters(), lr=0.0) for m in (D, G))
    d_loss, real_logits, _, _ = d_update(G_step, D_step, opt_d, real, sample_noise(cfg, 16, gen, "cpu"), objective)
    d_grads = [p.grad.clone() for p in D.parameters()]
    g_loss, _ = g_update(G_step, D_step, opt_g, sample_noise(cfg, 16, gen, "cpu"), objective)
    g_grads = [p.grad.clone() for p in G.parameters()]
    return torch.stack([d_loss, g_loss]).detach(), real_logits.detach(), d_grads + g_grads


def _assert_same(base, other):
    assert torch.allclose(base[0], other[0], rtol=1e-5) and torch.allclose(base[1], other[1], atol=1e-5)
    # All gradients as one vector: a conv bias followed by BatchNorm has a gradient that is zero up to rounding,
    # so per-tensor relative checks would compare rounding noise.
    a, b = torch.cat([g.flatten() for g in base[2]]), torch.cat([g.flatten() for g in other[2]])
    assert (a - b).norm() <= 1e-4 * a.norm()


@pytest.mark.parametrize("preset", ["dcgan", "seed"])
def test_channels_last_gives_the_same_losses_and_gradients(cache_dir, preset):
    base = _one_update_each(PLAIN, cache_dir, preset)
    other = _one_update_each(Speed(**{**PLAIN.__dict__, "channels_last": True}), cache_dir, preset)
    _assert_same(base, other)


def test_bf16_autocast_stays_within_bf16_rounding(cache_dir):
    base = _one_update_each(PLAIN, cache_dir)
    other = _one_update_each(Speed(**{**PLAIN.__dict__, "autocast": torch.bfloat16}), cache_dir)
    assert torch.allclose(base[0], other[0], rtol=2e-2)  # losses
    assert torch.allclose(base[1], other[1], atol=5e-2)  # logits on real digits
    for a, b in zip(base[2], other[2]):  # every gradient points the same way
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99


@pytest.mark.heavy(1)
def test_torch_compile_gives_the_same_losses_and_gradients(cache_dir):
    # The generator, where this project's own transposed-convolution forms run (the matrix product for the 1x1
    # input, the overlap-add with F.fold for one output channel): compiled by inductor in its D-step (no grad) and
    # G-step graphs. (The discriminator is stock PyTorch layers; compiling both, as --compile on does, took twice
    # as long in inductor's C++ compiler. The CUDA module compiles both.)
    base = _one_update_each(PLAIN, cache_dir)
    other = _one_update_each(PLAIN, cache_dir, compile_generator=True)
    _assert_same(base, other)


# --data-on-device and --noise-on-device have no test here: on the CPU both settings are the CPU, so such a test
# would compare a run with itself. They belong with the CUDA tests.
def test_training_with_channels_last_off_matches_the_default_run(tiny, tmp_path):
    a = train(tiny(checkpoint_dir=str(tmp_path / "a")))
    b = train(tiny(checkpoint_dir=str(tmp_path / "b"), channels_last="off"))
    sa, sb = checkpoints.load(a), checkpoints.load(b)
    for part in ("generator", "generator_ema", "discriminator"):
        for k in sa[part]:  # another summation order in the convolutions: rounding only
            assert torch.allclose(sa[part][k].float(), sb[part][k].float(), atol=1e-4), (part, k)
        assert any(not torch.equal(sa[part][k], sb[part][k]) for k in sa[part])  # it did run another way


def test_deterministic_mode_switches_the_process_and_keeps_the_math(tiny, tmp_path):
    """--deterministic on: deterministic algorithms for the run (on the CPU, where every kernel already is, the
    same checkpoint bit for bit), TF32 off either way; off again for the next run of the process."""
    plain = checkpoints.load(train(tiny(checkpoint_dir=str(tmp_path / "a"))))
    assert not torch.are_deterministic_algorithms_enabled()
    strict = checkpoints.load(train(tiny(checkpoint_dir=str(tmp_path / "b"), deterministic="on")))
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    for part in ("generator", "generator_ema", "discriminator"):
        assert all(torch.equal(plain[part][k], strict[part][k]) for k in plain[part]), part
    speed_settings(resolve({}), torch.device("cpu")).apply()
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic


def test_auto_switches_are_the_measured_winners_on_every_device():
    cfg = resolve({})
    for device in ("cpu", "cuda"):  # float32 eager won on both (docs/speed.md)
        auto = speed_settings(cfg, torch.device(device))
        assert auto.channels_last and auto.autocast is None and not auto.compile
    on = speed_settings(resolve({"compile": "on", "autocast": "bf16"}), torch.device("cuda"))
    assert on.autocast == torch.bfloat16 and on.compile
    off = speed_settings(resolve({"channels_last": "off", "compile": "off", "autocast": "off"}), torch.device("cuda"))
    assert not off.channels_last and off.autocast is None and not off.compile


def test_device_auto_follows_torch_accelerator(monkeypatch):
    """auto is the accelerator torch.accelerator finds (here: none, the CPU); one it found elsewhere (XPU, made up:
    this machine has none) is taken by its type; a torch without torch.accelerator keeps the CUDA-MPS-CPU order."""
    assert pick_device("auto") == torch.device("cpu") == pick_device("cpu")
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda: torch.device("xpu", 0))
    assert pick_device("auto") == torch.device("xpu")
    monkeypatch.delattr(torch, "accelerator")
    assert pick_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")
    with pytest.raises(UsageError, match="--device mps is not available"):
        pick_device("mps")


def test_weight_average_follows_with_warmup_then_lags():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    ema = Averager(model, decay=0.99)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    before = ema.model[0].weight.clone()
    ema.update(0)  # warm-up: weight 1 - 1/10 on the new value
    assert torch.allclose(ema.model[0].weight, before + 0.9, atol=1e-6)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(10_000)  # steady state: 1 - decay
    assert torch.allclose(ema.model[0].weight, before + 0.9 + 0.01 * 1.1, atol=1e-6)
    model[1].num_batches_tracked.fill_(7)
    ema.update(10_001)
    assert ema.model[1].num_batches_tracked.item() == 0  # integer buffers are not averaged, nor copied each step
    ema.copy_counters()
    assert ema.model[1].num_batches_tracked.item() == 7  # but copied when a checkpoint is written
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_inference_preparation_keeps_the_generators_function():
    cfg = resolve({"width": 8})
    torch.manual_seed(0)
    G, _ = build_models(cfg)
    with torch.no_grad():  # give BatchNorm non-trivial statistics
        for m in G.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    G.eval()
    fast = prepare_for_inference(copy.deepcopy(G), cfg, torch.device("cpu"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    z = torch.randn(32, cfg.z_dim)
    with torch.no_grad():
        assert torch.allclose(G(z), fast(z), atol=1e-5)


def _states_after(iterations, per_tensor_adam, cache_dir):
    """A TrainState of the default preset (small) after some iterations of update(), with Adam as the trainer runs
    it (foreach) or as the per-tensor loop that the CPU's Adam would run by default."""
    cfg = resolve({"width": 8, "batch_size": 16, "cache_dir": cache_dir, "device": "cpu", "r1_every": 4})
    speed = speed_settings(cfg, torch.device("cpu"))
    data = load_dataset("mnist", "train", cache_dir=cache_dir)
    state = TrainState(cfg, torch.device("cpu"), speed, len(data), data.shape)
    batches, objective = Batches(data, cfg, torch.device("cpu"), speed), Objective.of(cfg, state.augmenter, None)
    if per_tensor_adam:  # update() puts the hyperparameters in at every step: undo foreach after it does
        trainers = state.set_hyperparameters

        def per_tensor():
            trainers()
            for group in (*state.opt_g.param_groups, *state.opt_d.param_groups):
                group["foreach"], group["fused"] = False, False

        state.set_hyperparameters = per_tensor
    for _ in range(iterations):
        update(state, state.G, state.D, batches, objective)
    return state


def test_the_trainers_fewer_operators_change_no_bit(cache_dir):
    """Adam foreach and the gradient norm without per-tensor moves (bench/op_count.py) train the same weights,
    bit for bit, as the per-tensor Adam and torch's get_total_norm."""
    ours, loop = (_states_after(9, per_tensor, cache_dir) for per_tensor in (False, True))  # R1 on 3 of them
    assert all(group["foreach"] for group in ours.opt_d.param_groups)
    for a, b in zip(ours.state_dict()["discriminator"].values(), loop.state_dict()["discriminator"].values()):
        assert torch.equal(a, b)
    for a, b in zip(ours.G.parameters(), loop.G.parameters()):
        assert torch.equal(a, b)
    untrained = _states_after(0, False, cache_dir)
    assert not any(torch.equal(a, b) for a, b in zip(ours.G.parameters(), untrained.G.parameters()))  # it trained
    assert torch.equal(gradient_norm(ours.D), torch.nn.utils.get_total_norm([p.grad for p in ours.D.parameters()]))
