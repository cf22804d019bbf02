"""How the generators' transposed convolutions are computed (the same math on the same weights: PyTorch's kernels, a
banded FFT, or one matrix product), and batch norms folded into the convolution before them for inference."""

from __future__ import annotations

from typing import TypeVar, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

M = TypeVar("M", bound=nn.Module)


class ConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d with a choice of formulation, all the same math on the same weights.

    impl: "direct" (PyTorch's convolution kernels), "fft" (stride 1 only: a linear convolution through the FFT,
    far faster for a large kernel), "matmul" (one matrix product, then an overlap-add with F.fold: faster on a
    CPU when the input is 1x1 or the output has one channel, shapes the convolution kernels handle badly), or
    "auto" (decided per call from the shapes and the device).
    """

    impl = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]  # never given an output_size
        """x: (B, C, H, W), or (B, C) for a 1x1 map (a generator's z: no reshape on the way in)."""
        if x.dim() == 2 and (self.impl if self.impl != "auto" else self._auto(x)) == "matmul":
            return self._projected(x)
        if x.dim() == 2:
            x = x.reshape(*x.shape, 1, 1)  # (B, C, 1, 1)
        impl = self.impl if self.impl != "auto" else self._auto(x)
        if impl == "fft" and self.stride == (1, 1):
            return self._fft_forward(x)
        if impl == "matmul":
            return self._matmul_forward(x)
        return super().forward(x)

    def _auto(self, x: torch.Tensor) -> str:
        if self.stride == (1, 1) and min(self.kernel_size) >= 16:
            return "fft"
        if x.device.type == "cpu" and (x.dim() == 2 or x.shape[-2] * x.shape[-1] == 1 or self.out_channels == 1):
            return "matmul"
        return "direct"

    def _fft_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._add_bias(_BandedFFT.apply(x, self.weight, self.padding))

    def _matmul_forward(self, x: torch.Tensor) -> torch.Tensor:
        # Every input pixel adds its (C_in) @ (C_in, C_out*kh*kw) product as a kh x kw patch at stride s.
        b, c, h, w = x.shape
        padding = cast(tuple[int, int], self.padding)  # a number per side, never "same"
        (kh, kw), (sy, sx), (py, px) = self.kernel_size, self.stride, padding
        if h == w == 1:
            return self._projected(x.reshape(b, c))
        cols = x.permute(0, 2, 3, 1).reshape(b * h * w, c) @ self.weight.reshape(c, -1)  # (B*H*W, C_out*kh*kw)
        cols = cols.view(b, h * w, -1).transpose(1, 2)  # (B, C_out*kh*kw, H*W)
        size = ((h - 1) * sy - 2 * py + kh, (w - 1) * sx - 2 * px + kw)
        return self._add_bias(F.fold(cols, size, self.kernel_size, padding=padding, stride=self.stride))

    def _projected(self, x: torch.Tensor) -> torch.Tensor:
        """A 1x1 map, (B, C): nothing overlaps, so the product with the weights already is the image."""
        padding = cast(tuple[int, int], self.padding)
        (kh, kw), (py, px) = self.kernel_size, padding
        out = (x @ self.weight.reshape(self.in_channels, -1)).view(-1, self.out_channels, kh, kw)
        return self._add_bias(out[..., py : kh - py, px : kw - px] if py or px else out)

    def _add_bias(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)


class _BandedFFT(torch.autograd.Function):
    """A stride-1 transposed convolution: the FFT along the width, a banded matrix product along the height.

    The full output, L = H + K - 1 per axis, is the linear convolution of x with the kernel,
    full[b, o, r, s] = sum_c sum_ij x[b, c, i, j] w[c, o, r - i, s - j], and the layer keeps [p, L - p).
    Along the width that is a product of spectra: on a grid of N >= L - p points whatever the circular
    convolution wraps around lands outside the kept columns. Along the height it is a banded (Toeplitz) matrix of
    the kernel rows' spectra: one matrix product per frequency, a shape GEMMs like. The gradients are the
    matching cross-correlations (conjugate spectra, transposed band), exact on the same grid; written out here
    because autograd through rfft zero-fills full complex spectra, which is far slower on a CPU.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
        (b, c, h, w), (_, o, kh, kw), (py, px) = x.shape, weight.shape, padding
        rows, cols, grid = h + kh - 1 - 2 * py, w + kw - 1 - 2 * px, _fft_size(w + kw - 1 - px)
        xs = torch.fft.rfft(x.float(), n=grid)  # (B, C, H, F)
        f = xs.shape[-1]
        u = py + torch.arange(rows, device=x.device) - torch.arange(h, device=x.device)[:, None]  # kernel row, (H, R)
        inside = (u >= 0) & (u < kh)
        band = torch.fft.rfft(weight.float(), n=grid)[:, :, u.clamp(0, kh - 1)] * inside[..., None]  # (C, O, H, R, F)
        band = band.permute(4, 0, 2, 1, 3).reshape(f, c * h, o * rows)
        xs = xs.permute(3, 0, 1, 2).reshape(f, b, c * h)
        ctx.save_for_backward(xs, band, u, inside)
        ctx.dims = (x.dtype, weight.dtype, b, c, h, w, o, kh, kw, rows, cols, grid, px)
        out = torch.fft.irfft((xs @ band).view(f, b, o, rows).permute(1, 2, 3, 0), n=grid)  # (B, O, R, N)
        return out[..., px : px + cols].to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        xs, band, u, inside = ctx.saved_tensors
        x_dtype, w_dtype, b, c, h, w, o, kh, kw, rows, cols, grid, px = ctx.dims
        gs = torch.fft.rfft(F.pad(grad.float(), (px, grid - cols - px)), n=grid)  # kept columns at their place
        gs = gs.permute(3, 0, 1, 2).reshape(-1, b, o * rows)  # (F, B, O*R)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = (gs @ band.mH).view(-1, b, c, h).permute(1, 2, 3, 0)  # (B, C, H, F)
            grad_x = torch.fft.irfft(grad_x, n=grid)[..., :w].to(x_dtype)
        if ctx.needs_input_grad[1]:
            per_pair = (xs.mH @ gs).view(-1, c, h, o, rows).permute(1, 3, 2, 4, 0)[:, :, inside]  # (C, O, pairs, F)
            spectrum = per_pair.new_zeros(c, o, kh, per_pair.shape[-1]).index_add_(2, u[inside], per_pair)
            grad_w = torch.fft.irfft(spectrum, n=grid)[..., :kw].to(w_dtype)  # (C, O, KH, KW)
        return grad_x, grad_w, None


class SameConvTranspose2d(ConvTranspose2d):
    """TensorFlow's conv2d_transpose with padding='SAME': output = input * stride, extra padding at the end.

    PyTorch can only trim symmetrically, so trim the leading amount here and cut the tail by slicing.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, bias: bool = True):
        total = max(kernel - stride, 0)
        super().__init__(cin, cout, kernel, stride, padding=total // 2, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]  # never given an output_size
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


@torch.no_grad()
def fold_batchnorms(model: M) -> M:
    """Fold, in place, each eval-mode BatchNorm2d into the (transposed) convolution before it in a Sequential:
    the same function with one pass fewer over the activations. For inference only: the folded layers are
    frozen."""
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(bn, nn.modules.batchnorm._BatchNorm):
                seq[i + 1] = fold_into(conv, bn)
    return model


def fold_into(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.modules.batchnorm._BatchNorm) -> nn.Identity:
    """Fold the eval-mode bn into conv, in place; the Identity that takes bn's place."""
    # bn(y) = (y - mean) * scale + beta per output channel, with scale = gamma / sqrt(var + eps)
    assert bn.running_mean is not None and bn.running_var is not None  # an eval-mode norm keeps them
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        # output channels are a conv's dim 0 and a transposed conv's dim 1
        shape = (1, -1, 1, 1) if isinstance(conv, nn.ConvTranspose2d) else (-1, 1, 1, 1)
        conv.weight.mul_(scale.view(shape))
        conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)
    return nn.Identity()
