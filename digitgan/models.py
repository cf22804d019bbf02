"""The two generator/discriminator pairs. Discriminators return logits: losses use BCEWithLogits."""
from __future__ import annotations

import torch
import torch.nn as nn

from .config import TrainConfig


class SameConvTranspose2d(nn.ConvTranspose2d):
    """TensorFlow's conv2d_transpose with padding='SAME': output = input * stride, extra padding at the end.

    PyTorch can only trim symmetrically, so trim the leading amount here and cut the tail by slicing.
    `impl` picks how a stride-1 layer is computed: "direct" (the convolution kernels) or "fft" (the same
    linear convolution through the FFT, far faster for a large kernel). Both use the same weights.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, bias: bool = True):
        total = max(kernel - stride, 0)
        super().__init__(cin, cout, kernel, stride, padding=total // 2, bias=bias)
        self.impl = "direct"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] * self.stride[0], x.shape[-1] * self.stride[1]
        if self.impl == "fft":
            return self._fft_forward(x)
        return super().forward(x)[..., :h, :w]

    def _fft_forward(self, x: torch.Tensor) -> torch.Tensor:
        # With stride 1 the full transposed convolution is the linear convolution of x with the kernel:
        # full[o, y, x] = sum_c sum_ij x[c, i, j] w[c, o, y - i, x - j]. An FFT of at least H + K - 1 points
        # makes the circular convolution equal the linear one; then crop as 'SAME' does.
        (h, w), (kh, kw), p = x.shape[-2:], self.kernel_size, self.padding[0]
        size = (_fft_size(h + kh - 1), _fft_size(w + kw - 1))
        spectrum = torch.einsum("bchw,cohw->bohw", torch.fft.rfft2(x.float(), s=size),
                                torch.fft.rfft2(self.weight.float(), s=size))
        out = torch.fft.irfft2(spectrum, s=size)[..., p:p + h, p:p + w].to(x.dtype)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)


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


def use_fft_convolutions(model: nn.Module, setting: str) -> None:
    """Set how large-kernel stride-1 SAME transposed convs are computed: auto (FFT for kernels >= 16), direct, fft."""
    for m in model.modules():
        if isinstance(m, SameConvTranspose2d) and m.stride == (1, 1):
            m.impl = setting if setting != "auto" else ("fft" if min(m.kernel_size) >= 16 else "direct")


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
            nn.ConvTranspose2d(z_dim, 4 * width, 4, 1, 0, bias=False), nn.BatchNorm2d(4 * width), nn.ReLU(),  # (B, 4w, 4, 4)
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),  # (B, 2w, 8, 8)
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),  # (B, w, 16, 16)
            nn.ConvTranspose2d(width, 1, 4, 2, 1, bias=False), nn.Tanh(),  # (B, 1, 32, 32)
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
    use_fft_convolutions(g, cfg.conv_impl)
    return g, d


def sample_noise(cfg: TrainConfig, n: int, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """(n, z_dim) noise from cfg.z_dist, drawn from the given generator."""
    if cfg.z_dist == "uniform":
        return torch.rand(n, cfg.z_dim, generator=generator, device=device).mul_(2).sub_(1)
    return torch.randn(n, cfg.z_dim, generator=generator, device=device)
