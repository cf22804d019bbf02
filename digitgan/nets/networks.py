"""The networks: the DCGAN generator and discriminator of Radford et al. (their conditional forms, and the minibatch
standard deviation), the 2019 script's pair (the seed preset), their initialisation, spectral normalisation, and
the noise they draw from. Discriminators return logits."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..config import TrainConfig
from ..data.shape import Shape
from ..data.sources import known_shape
from ..errors import UsageError
from .convs import ConvTranspose2d, SameConvTranspose2d, set_conv_impl
from .efficientnet import load_efficientnet
from .projected import MIX_SEED, FrozenFeatures, ProjectedDiscriminator


class SeedGenerator(nn.Module):
    """The 2019 script's generator; width 16 gives its 256/64/32/16 channels."""

    SHAPE = (32, 1)  # (side, channels) of what it draws: the network as it was, for 32x32 grey pictures

    def __init__(self, z_dim: int = 100, width: int = 16):
        super().__init__()
        self.c = 16 * width
        self.fc = nn.Linear(z_dim, 4 * 4 * self.c)
        self.bn = nn.BatchNorm1d(4 * 4 * self.c)
        self.net = nn.Sequential(
            SameConvTranspose2d(self.c, 4 * width, 5, 2),
            nn.ReLU(),  # (B, 64, 8, 8)
            SameConvTranspose2d(4 * width, 2 * width, 5, 2),
            nn.ReLU(),  # (B, 32, 16, 16)
            SameConvTranspose2d(2 * width, width, 5, 2),
            nn.ReLU(),  # (B, 16, 32, 32)
            # The original's last layer: one 32x32 kernel over the whole 32x32 map.
            SameConvTranspose2d(width, 1, 32, 1, bias=False),
            nn.Tanh(),  # (B, 1, 32, 32)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.fc(z)))  # (B, 4*4*256)
        # TF reshapes channels-last; the layout of a freshly initialised layer does not matter.
        return self.net(x.view(-1, self.c, 4, 4))  # (B, 256, 4, 4) in


class SeedDiscriminator(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2),  # (B, 16, 16, 16)
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2),  # (B, 32, 8, 8)
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1),
            nn.BatchNorm2d(4 * width),
            nn.LeakyReLU(0.2),  # (B, 64, 4, 4)
            nn.Flatten(),  # (B, 1024)
            nn.Linear(4 * 4 * 4 * width, 1),  # (B, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(-1)  # (B,)


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d (the same call, the same numbers) whose batch counter, num_batches_tracked (kept for the
    checkpoints' layout; the momentum's update does not read it), is counted on the host and added to every
    layer's at once by count_batches(): one operator an iteration, not one per layer and forward. Compiled, it
    counts in its graph as nn.BatchNorm2d does."""

    pending = 0  # training forwards not yet added to num_batches_tracked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            if torch.compiler.is_compiling():
                assert self.num_batches_tracked is not None
                self.num_batches_tracked.add_(1)
            else:
                self.pending += 1
        assert self.momentum is not None  # an exponential average: the counter plays no part in it
        return nn.functional.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, self.training, self.momentum, self.eps
        )


def count_batches(*models: nn.Module) -> None:
    """Add each BatchNorm2d's pending training forwards to its num_batches_tracked, in one operator."""
    layers = [m for model in models for m in model.modules() if isinstance(m, BatchNorm2d) and m.pending]
    if layers:
        counters = [m.num_batches_tracked for m in layers]
        torch._foreach_add_([c for c in counters if c is not None], [m.pending for m in layers])
        for m in layers:
            m.pending = 0


CHANNEL_CAP = 8  # the widest layers' channels, in widths: reached at 64 px, kept from there on up


def _levels(resolution: int) -> int:
    """Stride-2 steps between the 4x4 map and the image: 3 at 32x32, 4 at 64x64 (Radford et al.'s DCGAN), one more
    per doubling."""
    return resolution.bit_length() - 3


def _channels(width: int, resolution: int) -> list[int]:
    """The channels of the maps from 4x4 up to half the resolution: width * 2^k, halving per doubling of the side
    (width at half the resolution), at most CHANNEL_CAP * width (so that past 64 px the top layers do not grow
    without bound: 32 and 64 px are Radford et al.'s, uncapped)."""
    levels = _levels(resolution)
    return [width * min(2 ** (levels - 1 - i), CHANNEL_CAP) for i in range(levels)]


class DCGANGenerator(nn.Module):
    """Radford et al. 2015: project z to a 4x4 map, then one stride-2 transposed conv per doubling of the side,
    halving the channels (under a cap: _channels), up to the image's resolution and channels."""

    def __init__(self, z_dim: int, width: int, resolution: int, channels: int):
        super().__init__()
        chans = _channels(width, resolution)
        c = chans[0]
        layers = [ConvTranspose2d(z_dim, c, 4, 1, 0, bias=False), BatchNorm2d(c), nn.ReLU()]  # (B, c, 4, 4)
        for out in chans[1:]:  # each: (B, c, s, s) -> (B, out, 2s, 2s)
            layers += [ConvTranspose2d(c, out, 4, 2, 1, bias=False), BatchNorm2d(out), nn.ReLU()]
            c = out
        layers += [ConvTranspose2d(c, channels, 4, 2, 1, bias=False), nn.Tanh()]  # (B, channels, res, res)
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, z_dim): the first layer takes it as a 1x1 map


class MinibatchStd(nn.Module):
    """Karras et al. 2018: one more channel, how much the batch varies (each feature's standard deviation over a
    group of samples, averaged over features and positions), so that D can tell a batch of too alike images from
    a real one and G is pushed towards variety. Samples i, i + B/G, i + 2B/G, ... form a group.

    Given the classes (a conditional D), the spread is each sample's class's instead: the batch's samples of that
    class form the group. Across a batch of mixed classes the spread is mostly between classes, the same for real
    and generated batches; within one class it is the variety a conditional G lacks (docs/experiments.md)."""

    def __init__(self, group: int, classes: int = 0):
        super().__init__()
        self.group, self.classes = group, classes

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        if y is not None:
            return torch.cat([x, self.class_std(x, y).to(x.dtype)[:, None, None, None].expand(b, 1, h, w)], 1)
        g = math.gcd(self.group, b)  # a batch that the group size does not divide: smaller groups
        std = (x.float().view(g, b // g, c, h, w).var(0, unbiased=False) + 1e-8).sqrt().mean((1, 2, 3))  # (B/G,)
        return torch.cat([x, std.to(x.dtype).repeat(g)[:, None, None, None].expand(b, 1, h, w)], 1)  # (B, c+1, h, w)

    def class_std(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B,): the spread of the batch's samples of each sample's class (~0 for a class's only sample)."""
        with torch.autocast(x.device.type, enabled=False):  # sums of squares in float32, under bf16 too
            member = nn.functional.one_hot(y, self.classes).float()  # (B, K)
            count = member.sum(0).clamp(min=1)[:, None]  # (K, 1)
            flat = x.float().flatten(1)  # (B, F)
            mean = member.T @ flat / count  # (K, F)
            var = member.T @ (flat - mean[y]) ** 2 / count  # (K, F)
            return (var + 1e-8).sqrt().mean(1)[y]  # (B,)


class DCGANDiscriminator(nn.Module):
    """The generator mirrored: one stride-2 conv per halving of the side, doubling the channels (under the same
    cap), down to 4x4,
    then (with mbstd) the minibatch standard deviation channel, and a 4x4 conv to one logit; with pack, one logit
    for each pack of that many pictures (Lin et al. 2018)."""

    def __init__(self, width: int, resolution: int, channels: int, mbstd: int = 0, pack: int = 1, classes: int = 0):
        super().__init__()
        self.pack = pack
        chans = _channels(width, resolution)[::-1]  # from half the resolution down to 4x4
        first = nn.Conv2d(channels * pack, chans[0], 4, 2, 1, bias=False)
        layers, c = [first, nn.LeakyReLU(0.2)], chans[0]  # (B/pack, w, res/2, res/2)
        for out in chans[1:]:  # each: (B, c, s, s) -> (B, out, s/2, s/2)
            layers += [nn.Conv2d(c, out, 4, 2, 1, bias=False), BatchNorm2d(out), nn.LeakyReLU(0.2)]
            c = out
        if mbstd:
            layers.append(MinibatchStd(mbstd, classes))  # (B, c+1, 4, 4)
            c += 1
        layers.append(nn.Conv2d(c, 1, 4, 1, 0, bias=False))  # (B, 1, 1, 1)
        self.net = nn.Sequential(*layers)
        self.features = c * 4 * 4  # of the last 4x4 map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.packed(x)).view(-1)  # (B/pack,)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        """PacGAN's packing: each run of `pack` consecutive pictures side by side in the channels, one input to D."""
        b, c, h, w = x.shape
        return x if self.pack == 1 else x.reshape(b // self.pack, self.pack * c, h, w)  # (B/pack, pack*C, H, W)


class ClassBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift are looked up per class (conditional batch norm, as in the generator of
    Miyato & Koyama 2018): the statistics are shared, the affine part is the class's."""

    def __init__(self, channels: int, classes: int):
        super().__init__()
        self.bn = BatchNorm2d(channels, affine=False)
        self.gain, self.shift = nn.Embedding(classes, channels), nn.Embedding(classes, channels)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shape = (-1, self.gain.embedding_dim, 1, 1)  # (B, C, 1, 1): one view, not two unsqueezes
        return self.bn(x) * self.gain(y).view(shape) + self.shift(y).view(shape)


class ConditionalDCGANGenerator(DCGANGenerator):
    """The DCGAN generator with the scale and shift of its 4x4 and 8x8 batch norms chosen by the class.

    The larger maps' norms stay shared: per-sample scales there cost passes over the largest maps (a conditional
    iteration took 12 % longer than an unconditional one with them, 9 % without) and, in the measurements of
    docs/conditional.md, bought no quality.
    """

    CLASS_NORMS = 2  # the first two batch norms

    def __init__(self, z_dim: int, width: int, classes: int, resolution: int, channels: int):
        super().__init__(z_dim, width, resolution, channels)
        norms = [(i, m) for i, m in enumerate(self.net) if isinstance(m, nn.BatchNorm2d)]
        for i, norm in norms[: self.CLASS_NORMS]:
            self.net[i] = ClassBatchNorm2d(norm.num_features, classes)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]  # with classes
        x = z  # (B, z_dim): the first layer takes it as a 1x1 map
        for layer in self.net:
            x = layer(x, y) if isinstance(layer, ClassBatchNorm2d) else layer(x)
        return x


class ProjectionDiscriminator(DCGANDiscriminator):
    """The DCGAN discriminator plus Miyato & Koyama's projection: the inner product of a class embedding with
    D's last features, added to the logit (a class-specific linear head on top of the shared one)."""

    def __init__(self, width: int, classes: int, resolution: int, channels: int, mbstd: int = 0):
        super().__init__(width, resolution, channels, mbstd, classes=classes)  # mbstd: the spread within classes
        self.embed = nn.Embedding(classes, self.features)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]  # with classes
        h = x
        for layer in list(self.net)[:-1]:
            h = layer(h, y) if isinstance(layer, MinibatchStd) else layer(h)  # (B, c, 4, 4), or c+1 with mbstd
        return self.net[-1](h).view(-1) + (self.embed(y) * h.flatten(1)).sum(1)  # (B,)


def call(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """model(x), or model(x, y) for a class-conditional model."""
    return model(x) if y is None else model(x, y)


def _init_seed(m: nn.Module) -> None:
    # TF's truncated_normal: redraws anything beyond two standard deviations.
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _init_dcgan(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, ClassBatchNorm2d):  # like a batch norm's affine part, per class
        nn.init.normal_(m.gain.weight, 1.0, 0.02)
        nn.init.zeros_(m.shift.weight)
    elif isinstance(m, ProjectionDiscriminator):  # small, like the weights it adds to
        nn.init.normal_(m.embed.weight, 0.0, 0.02)


def build_models(cfg: TrainConfig, shape: Shape | None = None) -> tuple[nn.Module, nn.Module]:
    """A freshly initialised (generator, discriminator) pair for images of the data's shape (default: the shape the
    config's dataset is known to have); draws from torch's global RNG (a projected D: from a stream of its own)."""
    g, d = _built(cfg, shape, discriminator=True)
    assert d is not None
    return g, d


def build_generator(cfg: TrainConfig, shape: Shape | None = None) -> nn.Module:
    """The generator of build_models alone, for weights to be loaded into (a projected D is not built: it would
    load its feature network for nothing)."""
    return _built(cfg, shape, discriminator=False)[0]


def _built(cfg: TrainConfig, shape: Shape | None, discriminator: bool) -> tuple[nn.Module, nn.Module | None]:
    shape = shape or known_shape(cfg)
    size = dict(resolution=shape.resolution, channels=shape.channels)
    g: nn.Module
    d: nn.Module
    if cfg.preset == "seed":
        if (shape.resolution, shape.channels) != SeedGenerator.SHAPE:
            raise UsageError(
                f"the seed preset is the 2019 network, for 32x32 grey images; these data are "
                f"{shape.describe()}: use --preset dcgan"
            )
        g, d, init = SeedGenerator(cfg.z_dim, cfg.width), SeedDiscriminator(cfg.width), _init_seed
    elif cfg.conditional == "on":
        g, d, init = (
            ConditionalDCGANGenerator(cfg.z_dim, cfg.width, len(shape.classes), **size),
            ProjectionDiscriminator(cfg.width, len(shape.classes), **size, mbstd=cfg.mbstd),
            _init_dcgan,
        )
    else:
        g, d, init = (
            DCGANGenerator(cfg.z_dim, cfg.width, **size),
            DCGANDiscriminator(cfg.width, **size, mbstd=cfg.mbstd, pack=cfg.pack),
            _init_dcgan,
        )
    g.apply(init)
    d.apply(init)
    if cfg.spectral_norm != "off":
        spectral_normed(d, discriminator=True)
    if cfg.spectral_norm == "both":
        spectral_normed(g, discriminator=False)
    set_conv_impl(g, cfg.conv_impl)
    if cfg.discriminator == "projected":  # the DCGAN D above was still drawn: G starts the same whichever D judges it
        return g, projected(cfg, shape) if discriminator else None
    return g, d


def spectral_normed(model: nn.Module, discriminator: bool) -> None:
    """In place: each convolution's and linear layer's weight (and a discriminator's class embedding) divided by
    its largest singular value (one power iteration a training step, Miyato et al. 2018). A discriminator's batch
    norms become identities, as in SNGAN's (the norm would rescale what the constraint bounds); a generator keeps
    its own, and its class-conditional gains stay as they are."""
    layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear) + ((nn.Embedding,) if discriminator else ())
    for m in list(model.modules()):
        if isinstance(m, layers):
            torch.nn.utils.parametrizations.spectral_norm(m)
        for name, child in m.named_children():
            if discriminator and isinstance(child, nn.BatchNorm2d):
                setattr(m, name, nn.Identity())


def bake_spectral_norm(model: nn.Module) -> nn.Module:
    """In place, for inference: each spectrally normalised weight replaced by its normalised value as of now
    (eval mode runs no power iteration), so batch norms can be folded into it and exporters see plain layers."""
    for m in model.modules():
        if torch.nn.utils.parametrize.is_parametrized(m, "weight"):
            torch.nn.utils.parametrize.remove_parametrizations(m, "weight")
    return model


def projected_side(cfg: TrainConfig, shape: Shape) -> int:
    """The side the projected D's feature network reads pictures at: --projected-side, or twice the resolution
    (at least 128, at most 256)."""
    return cfg.projected_side or min(max(2 * shape.resolution, 128), 256)


def projected(cfg: TrainConfig, shape: Shape) -> ProjectedDiscriminator:
    """The projected discriminator of a run: the wheel's feature network, the mixing drawn from the run's seed, the
    heads initialised from a stream of their own (the same heads whatever else the process drew)."""
    net, _ = load_efficientnet(cfg.cache_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + MIX_SEED + 1)
        return ProjectedDiscriminator(
            FrozenFeatures(net),
            projected_side(cfg, shape),
            shape.channels,
            cfg.seed,
            len(shape.classes) if cfg.conditional == "on" else 0,
        )


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """model.load_state_dict(weights), or a UsageError saying that a checkpoint's network has another layout
    (written by a version of dcgan that built it differently) instead of a page of missing keys."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        differ = set(model.state_dict()) ^ set(weights)
        detail = (
            f"{len(differ)} weight names differ, e.g. {min(differ)}" if differ else str(e).splitlines()[-1].strip()
        )  # same names, other shapes
        raise UsageError(
            f"the checkpoint's {type(model).__name__} does not fit the network this version of dcgan "
            f"builds for its config ({detail}): use the version that trained it, or start over with "
            f"--fresh"
        ) from None


def sample_noise(cfg: TrainConfig, n: int, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """(n, z_dim) noise from cfg.z_dist, drawn from the given generator."""
    if cfg.z_dist == "uniform":
        return torch.rand(n, cfg.z_dim, generator=generator, device=device).mul_(2).sub_(1)
    return torch.randn(n, cfg.z_dim, generator=generator, device=device)
