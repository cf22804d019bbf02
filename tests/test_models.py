import pytest
import torch
import torch.nn.functional as F

from digitgan.config import resolve
from digitgan.nets.convs import ConvTranspose2d, SameConvTranspose2d
from digitgan.nets.networks import build_models, sample_noise


@pytest.mark.parametrize("preset", ["dcgan", "seed"])
def test_output_shapes_and_ranges(preset):
    cfg = resolve({"preset": preset})
    torch.manual_seed(0)
    g, d = build_models(cfg)
    z = sample_noise(cfg, 3, torch.Generator().manual_seed(0), "cpu")
    assert z.shape == (3, 100)
    x = g(z)
    assert x.shape == (3, 1, 32, 32) and x.abs().max() <= 1
    assert d(x).shape == (3,)


def test_seed_noise_is_uniform_in_minus_one_one_and_dcgan_is_normal():
    gen = torch.Generator().manual_seed(0)
    u = sample_noise(resolve({"preset": "seed"}), 1000, gen, "cpu")
    n = sample_noise(resolve({"preset": "dcgan"}), 1000, gen, "cpu")
    assert u.min() >= -1 and u.max() <= 1 and u.min() < -0.99 and u.max() > 0.99
    assert n.abs().max() > 2  # a normal reaches past the uniform's range


def _shapes(model, x):
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((type(m).__name__, tuple(o.shape))))
             for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    model(x)
    for h in hooks:
        h.remove()
    return seen


def test_seed_preset_layers_are_the_originals():
    cfg = resolve({"preset": "seed"})
    g, d = build_models(cfg)
    assert _shapes(g, torch.zeros(2, 100)) == [
        ("Linear", (2, 4 * 4 * 256)), ("SameConvTranspose2d", (2, 64, 8, 8)), ("SameConvTranspose2d", (2, 32, 16, 16)),
        ("SameConvTranspose2d", (2, 16, 32, 32)), ("SameConvTranspose2d", (2, 1, 32, 32))]
    last = g.net[6]
    assert last.weight.shape == (16, 1, 32, 32) and last.bias is None  # the 32x32 kernel, no bias
    assert all(m.kernel_size == (5, 5) and m.stride == (2, 2) for m in (g.net[0], g.net[2], g.net[4]))
    assert _shapes(d, torch.zeros(2, 1, 32, 32)) == [
        ("Conv2d", (2, 16, 16, 16)), ("Conv2d", (2, 32, 8, 8)), ("Conv2d", (2, 64, 4, 4)), ("Linear", (2, 1))]
    assert d.net[0].bias is None and d.net[0].kernel_size == (4, 4)
    # truncated normal, stddev 0.02: nothing beyond two standard deviations
    weights = [m.weight for m in list(g.modules()) + list(d.modules())
               if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert all(w.abs().max() <= 0.04 for w in weights)
    assert 0.012 < g.net[6].weight.std() < 0.02  # a truncated N(0, 0.02) has std about 0.0176


@pytest.mark.parametrize("kernel,stride", [(5, 2), (32, 1), (4, 2)])
def test_same_transposed_conv_crops_like_tensorflow(kernel, stride):
    # TF 'SAME': the full transposed convolution, with (k - s) // 2 rows cut at the start and the rest at the end.
    torch.manual_seed(0)
    layer = SameConvTranspose2d(3, 2, kernel, stride)
    x = torch.randn(2, 3, 8, 8)
    full = F.conv_transpose2d(x, layer.weight, layer.bias, stride=stride)
    start = max(kernel - stride, 0) // 2
    expected = full[..., start:start + 8 * stride, start:start + 8 * stride]
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_dcgan_preset_follows_radford():
    g, d = build_models(resolve({"preset": "dcgan", "width": 8}))
    assert isinstance(g.net[-1], torch.nn.Tanh)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules()) == 3
    assert [m.negative_slope for m in d.modules() if isinstance(m, torch.nn.LeakyReLU)] == [0.2] * 3
    assert not any(isinstance(m, torch.nn.Linear) for m in list(g.modules()) + list(d.modules()))  # all-convolutional


LAYERS = {  # (layer, input shape): the shapes where the formulations differ from PyTorch's kernels
    "seed 32x32 kernel": (lambda bias: SameConvTranspose2d(16, 1, 32, 1, bias=bias), (4, 16, 32, 32)),
    "stride 1, 20x20 kernel, 2 channels out": (lambda bias: ConvTranspose2d(3, 2, 20, 1, 3, bias=bias), (2, 3, 9, 7)),
    "seed SAME stride 2": (lambda bias: SameConvTranspose2d(16, 8, 5, 2, bias=bias), (4, 16, 8, 8)),
    "dcgan 1x1 input": (lambda bias: ConvTranspose2d(100, 32, 4, 1, 0, bias=bias), (4, 100, 1, 1)),
    "dcgan 1 channel out": (lambda bias: ConvTranspose2d(8, 1, 4, 2, 1, bias=bias), (4, 8, 16, 16)),
}


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("impl,layer", [("fft", "seed 32x32 kernel"), ("fft", "stride 1, 20x20 kernel, 2 channels out")]
                         + [("matmul", name) for name in LAYERS])
def test_transposed_conv_formulations_equal_the_direct_one_forward_and_backward(impl, layer, bias):
    make, shape = LAYERS[layer]
    torch.manual_seed(0)
    direct, other = make(bias), make(bias)
    other.load_state_dict(direct.state_dict())  # the same weights: checkpoints are interchangeable
    direct.impl, other.impl = "direct", impl
    x1 = torch.randn(*shape, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    y1, y2 = direct(x1), other(x2)
    assert y1.shape == y2.shape
    assert torch.allclose(y1, y2, atol=1e-5, rtol=1e-4)
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-5, rtol=1e-4)
    assert torch.allclose(direct.weight.grad, other.weight.grad, atol=1e-4, rtol=1e-4)
    if bias:
        assert torch.allclose(direct.bias.grad, other.bias.grad, atol=1e-4)


def test_auto_picks_a_formulation_by_shape():
    x = torch.zeros(2, 8, 16, 16)
    assert SameConvTranspose2d(8, 1, 32, 1)._auto(x) == "fft"
    assert ConvTranspose2d(8, 1, 4, 2, 1)._auto(x) == "matmul"  # one output channel
    assert ConvTranspose2d(8, 1, 4, 1, 0)._auto(torch.zeros(2, 8, 1, 1)) == "matmul"  # 1x1 input
    assert ConvTranspose2d(8, 4, 4, 2, 1)._auto(x) == "direct"


def test_seed_generator_picks_fft_automatically_and_gives_the_same_digits():
    torch.manual_seed(0)
    g_auto, _ = build_models(resolve({"preset": "seed", "width": 4}))
    g_direct, _ = build_models(resolve({"preset": "seed", "width": 4, "conv_impl": "direct"}))
    assert g_auto.net[6].impl == "auto" and g_direct.net[6].impl == "direct"
    g_direct.load_state_dict(g_auto.state_dict())
    z = torch.rand(8, 100) * 2 - 1
    assert torch.allclose(g_auto(z), g_direct(z), atol=1e-5)
