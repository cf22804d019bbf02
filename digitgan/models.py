"""The two generator/discriminator pairs. Discriminators return logits: losses use BCEWithLogits."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import TrainConfig


class ConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d with a choice of formulation, all the same math on the same weights.

    impl: "direct" (PyTorch's convolution kernels), "fft" (stride 1 only: a linear convolution through the FFT,
    far faster for a large kernel), "matmul" (one matrix product, then an overlap-add with F.fold: faster on a
    CPU when the input is 1x1 or the output has one channel, shapes the convolution kernels handle badly), or
    "auto" (decided per call from the shapes and the device).
    """

    impl = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        impl = self.impl if self.impl != "auto" else self._auto(x)
        if impl == "fft" and self.stride == (1, 1):
            return self._fft_forward(x)
        if impl == "matmul":
            return self._matmul_forward(x)
        return super().forward(x)

    def _auto(self, x: torch.Tensor) -> str:
        if self.stride == (1, 1) and min(self.kernel_size) >= 16:
            return "fft"
        if x.device.type == "cpu" and (x.shape[-2] * x.shape[-1] == 1 or self.out_channels == 1):
            return "matmul"
        return "direct"

    def _fft_forward(self, x: torch.Tensor) -> torch.Tensor:
        # With stride 1 the full transposed convolution is the linear convolution of x with the kernel:
        # full[o, y, x] = sum_c sum_ij x[c, i, j] w[c, o, y - i, x - j]. An FFT of at least H + K - 1 points
        # makes the circular convolution equal the linear one; then crop the padding.
        (h, w), (kh, kw), (py, px) = x.shape[-2:], self.kernel_size, self.padding
        size = (_fft_size(h + kh - 1), _fft_size(w + kw - 1))
        spectrum = torch.einsum("bchw,cohw->bohw", torch.fft.rfft2(x.float(), s=size),
                                torch.fft.rfft2(self.weight.float(), s=size))
        out = torch.fft.irfft2(spectrum, s=size)[..., py:py + h + kh - 1 - 2 * py, px:px + w + kw - 1 - 2 * px]
        return self._add_bias(out.to(x.dtype))

    def _matmul_forward(self, x: torch.Tensor) -> torch.Tensor:
        # Every input pixel adds its (C_in) @ (C_in, C_out*kh*kw) product as a kh x kw patch at stride s.
        b, c, h, w = x.shape
        (kh, kw), (sy, sx), (py, px) = self.kernel_size, self.stride, self.padding
        cols = x.permute(0, 2, 3, 1).reshape(b * h * w, c) @ self.weight.reshape(c, -1)  # (B*H*W, C_out*kh*kw)
        if h == w == 1:  # nothing overlaps: the product already is the image
            out = cols.view(b, self.out_channels, kh, kw)[..., py:kh - py, px:kw - px]
            return self._add_bias(out)
        cols = cols.view(b, h * w, -1).transpose(1, 2)  # (B, C_out*kh*kw, H*W)
        size = ((h - 1) * sy - 2 * py + kh, (w - 1) * sx - 2 * px + kw)
        return self._add_bias(F.fold(cols, size, self.kernel_size, padding=self.padding, stride=self.stride))

    def _add_bias(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)


class SameConvTranspose2d(ConvTranspose2d):
    """TensorFlow's conv2d_transpose with padding='SAME': output = input * stride, extra padding at the end.

    PyTorch can only trim symmetrically, so trim the leading amount here and cut the tail by slicing.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, bias: bool = True):
        total = max(kernel - stride, 0)
        super().__init__(cin, cout, kernel, stride, padding=total // 2, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] * self.stride[0], x.shape[-1] * self.stride[1]
        return super().forward(x)[..., :h, :w]


def _fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: sizes the FFT handles fastest."""
    while True:
        m = n
        for f in (2, 3, 5):
            while m % f == 0:
                m //= f
        if m == 1:
            return n
        n += 1


def set_conv_impl(model: nn.Module, impl: str) -> None:
    """Pick the formulation of every transposed convolution in the model (see ConvTranspose2d)."""
    for m in model.modules():
        if isinstance(m, ConvTranspose2d):
            m.impl = impl


class SeedGenerator(nn.Module):
    """The 2019 script's generator; width 16 gives its 256/64/32/16 channels."""

    def __init__(self, z_dim: int = 100, width: int = 16):
        super().__init__()
        self.c = 16 * width
        self.fc = nn.Linear(z_dim, 4 * 4 * self.c)
        self.bn = nn.BatchNorm1d(4 * 4 * self.c)
        self.net = nn.Sequential(
            SameConvTranspose2d(self.c, 4 * width, 5, 2), nn.ReLU(),  # (B, 64, 8, 8)
            SameConvTranspose2d(4 * width, 2 * width, 5, 2), nn.ReLU(),  # (B, 32, 16, 16)
            SameConvTranspose2d(2 * width, width, 5, 2), nn.ReLU(),  # (B, 16, 32, 32)
            # The original's last layer: one 32x32 kernel over the whole 32x32 map.
            SameConvTranspose2d(width, 1, 32, 1, bias=False), nn.Tanh(),  # (B, 1, 32, 32)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.fc(z)))  # (B, 4*4*256)
        # TF reshapes channels-last; the layout of a freshly initialised layer does not matter.
        return self.net(x.view(-1, self.c, 4, 4))  # (B, 256, 4, 4) in


class SeedDiscriminator(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),  # (B, 16, 16, 16)
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),  # (B, 32, 8, 8)
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.BatchNorm2d(4 * width), nn.LeakyReLU(0.2),  # (B, 64, 4, 4)
            nn.Flatten(),  # (B, 1024)
            nn.Linear(4 * 4 * 4 * width, 1),  # (B, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)  # (B,)


class DCGANGenerator(nn.Module):
    """Radford et al. 2015 at 32x32: project z to 4x4, then three stride-2 transposed convs."""

    def __init__(self, z_dim: int = 100, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            ConvTranspose2d(z_dim, 4 * width, 4, 1, 0, bias=False), nn.BatchNorm2d(4 * width), nn.ReLU(),  # (B, 4w, 4, 4)
            ConvTranspose2d(4 * width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),  # (B, 2w, 8, 8)
            ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),  # (B, w, 16, 16)
            ConvTranspose2d(width, 1, 4, 2, 1, bias=False), nn.Tanh(),  # (B, 1, 32, 32)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(len(z), -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),  # (B, w, 16, 16)
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),  # (B, 2w, 8, 8)
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(4 * width), nn.LeakyReLU(0.2),  # (B, 4w, 4, 4)
            nn.Conv2d(4 * width, 1, 4, 1, 0, bias=False),  # (B, 1, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)  # (B,)


def _init_seed(m: nn.Module) -> None:
    # TF's truncated_normal: redraws anything beyond two standard deviations.
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _init_dcgan(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def build_models(cfg: TrainConfig) -> tuple[nn.Module, nn.Module]:
    """A freshly initialised (generator, discriminator) pair; draws from torch's global RNG."""
    if cfg.preset == "seed":
        g, d, init = SeedGenerator(cfg.z_dim, cfg.width), SeedDiscriminator(cfg.width), _init_seed
    else:
        g, d, init = DCGANGenerator(cfg.z_dim, cfg.width), DCGANDiscriminator(cfg.width), _init_dcgan
    g.apply(init)
    d.apply(init)
    set_conv_impl(g, cfg.conv_impl)
    return g, d


def sample_noise(cfg: TrainConfig, n: int, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """(n, z_dim) noise from cfg.z_dist, drawn from the given generator."""
    if cfg.z_dist == "uniform":
        return torch.rand(n, cfg.z_dim, generator=generator, device=device).mul_(2).sub_(1)
    return torch.randn(n, cfg.z_dim, generator=generator, device=device)
