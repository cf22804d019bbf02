"""The feature spaces the quality figures are computed in. Each is named with a hash of its weights, and the name
goes into every output, so no figure can be taken for Inception FID or compared across spaces.

    evaluator  the shipped MNIST / Fashion-MNIST classifier's 128-d features (and its class probabilities):
               32x32 grey digits only; Stacked MNIST's three channels read apart (3 x 128-d), with each
               picture's mode (the three digits) for the mode figures
    imagenet   EfficientNet-Lite0's 1280-d ImageNet features at 224x224 (nets/efficientnet.py): any pictures
    classifier the 128-d features of the classifier `train-evaluator` trained on these data's own classes (the
               emoji, a labelled folder): a space no ImageNet network, and so no projected D, has seen
    PATH.pt    a TorchScript module of the user's: (B, C, R, R) images in [-1, 1] -> (B, D) features
    auto       evaluator where it applies (MNIST, Fashion-MNIST at 32x32 grey), imagenet otherwise
"""

from __future__ import annotations

import copy
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..core.fetch import sha256
from ..data.shape import Shape
from ..data.source import Source
from ..data.sources import BUILT_IN
from ..errors import UsageError

if TYPE_CHECKING:
    from .evaluator import Evaluator

# images per forward pass: on a CPU 2 at a time keep the 224x224 activations in cache (8.5 ms an image against
# 10.4 at 8 and 12.4 at 16 on the 2-core AVX-512 machine: bench/results/imagenet-eval.txt); a GPU wants many
CPU_BATCH, GPU_BATCH = 2, 256

Embed = Callable[[torch.Tensor], tuple[torch.Tensor, "torch.Tensor | None"]]


@dataclass
class FeatureSpace:
    name: str  # "<kind>:<first 12 hex digits of its weights' SHA-256>", e.g. "mnist-evaluator:1a4386a6e459"
    about: str  # a phrase for tables: "the MNIST evaluator's 128-d features"
    embed: Embed  # images (N, C, R, R) in [-1, 1] -> (features (N, D) float64 CPU, class probabilities or None)
    eval_num: int = 1000  # generated images per evaluation during training under --eval-num 0 (auto)
    modes: Callable[[torch.Tensor], torch.Tensor] | None = None  # features -> each picture's mode, where counted
    mode_count: int = 0  # how many modes the data has


def choose(features: str, src: Source, shape: Shape) -> str:
    """The space --features names for these data: auto resolved, evaluator refused where it cannot read them."""
    if features == "auto":
        return "evaluator" if src.evaluator_reads(shape) else "imagenet"
    if features == "classifier" and src.evaluator:
        raise UsageError(
            f"--features classifier: {src.name} has a shipped evaluator, which is its classifier: pass --features "
            f"evaluator (or auto)"
        )
    if features == "evaluator" and not src.evaluator_reads(shape):
        readable: dict[str, list[str]] = {}  # a shape: the data read at it
        for s in BUILT_IN.values():
            if s.evaluator_shape:
                readable.setdefault(s.evaluator_shape.describe(), []).append(s.title)
        names = ", ".join(f"{' or '.join(titles)} at {side}" for side, titles in readable.items())
        raise UsageError(
            f"--features evaluator: the shipped evaluators read {names}, not {src.name} at {shape.describe()}; pass "
            f"--features imagenet (or auto)"
        )
    return features


def feature_space(features: str, src: Source, shape: Shape, cache_dir: str, device: torch.device | str) -> FeatureSpace:
    """The feature space --features chooses for these data, ready on the device."""
    choice = choose(features, src, shape)
    if choice == "evaluator":
        from .evaluator import load_evaluator

        name = src.evaluator or src.name
        model, record = load_evaluator(name)
        model.to(device)
        digest = record["sha256"][:12]
        if shape.channels == model.body[0].in_channels:
            about = f"the {name} evaluator's 128-d features"
            return FeatureSpace(f"{name}-evaluator:{digest}", about, model.embed, 2000)
        return per_channel_space(model, f"{name}-evaluator-per-channel:{digest}", name, shape.channels)
    if choice == "imagenet":
        return imagenet_space(cache_dir, device)
    if choice == "classifier":
        return classifier_space(src, shape, cache_dir, device)
    return torchscript_space(choice, device)


def classifier_space(src: Source, shape: Shape, cache_dir: str, device: torch.device | str) -> FeatureSpace:
    from .evaluator import FEATURES, load_classifier

    classifier = load_classifier(src.name, cache_dir, device, shape.resolution, shape.channels)
    if classifier is None:
        raise UsageError(
            f"--features classifier: no classifier of {src.name} at {shape.describe()} yet: train it with `python "
            f"dcgan.py train-evaluator --dataset {src.name} --resolution {shape.resolution}` (minutes, once)"
        )
    kind = Path(src.name).name
    return FeatureSpace(
        f"{kind}-{classifier.name}",
        f"the {FEATURES}-d features of the classifier train-evaluator trained on {kind}'s classes",
        classifier.embed,
        2000,
    )


def per_channel_space(model: Evaluator, name: str, title: str, channels: int) -> FeatureSpace:
    """The shipped one-channel evaluator reading each channel of a picture apart (Stacked MNIST: a digit in each):
    the channels' features side by side (channels x 128-d), and the picture's mode, the classes it finds in its
    channels read as the digits of one number (red first: 100 R + 10 G + B of 1,000)."""
    classes = model.head.out_features
    head = copy.deepcopy(model.head).to("cpu", torch.float64)  # the features are float64 on the CPU

    def embed(images: torch.Tensor) -> tuple[torch.Tensor, None]:
        n, c, r, _ = images.shape
        feats, _ = model.embed(images.reshape(n * c, 1, r, r))
        return feats.reshape(n, c * feats.shape[1]), None

    @torch.inference_mode()
    def modes(feats: torch.Tensor) -> torch.Tensor:
        found = head(feats.reshape(len(feats) * channels, -1)).argmax(1).reshape(len(feats), channels)
        return (found * classes ** torch.arange(channels - 1, -1, -1)).sum(1)

    return FeatureSpace(
        name,
        f"the {title} evaluator's 128-d features of each of the {channels} channels",
        embed,
        2000,
        modes,
        classes**channels,
    )


def imagenet_space(cache_dir: str, device: torch.device | str) -> FeatureSpace:
    from ..nets.efficientnet import FEATURES, fast_copy, load_efficientnet, to_input

    model, digest = load_efficientnet(cache_dir, say=lambda line: print(line, file=sys.stderr))
    fast = fast_copy(model).to(device)

    batch = CPU_BATCH if torch.device(device).type == "cpu" else GPU_BATCH

    @torch.inference_mode()
    def embed(images: torch.Tensor) -> tuple[torch.Tensor, None]:
        out = [
            fast.features(to_input(chunk.to(device).float()).contiguous(memory_format=torch.channels_last))
            .double()
            .cpu()
            for chunk in images.split(batch)
        ]
        return torch.cat(out), None

    return FeatureSpace(
        f"imagenet-efficientnet-lite0:{digest[:12]}", f"EfficientNet-Lite0's {FEATURES}-d ImageNet features", embed
    )


def torchscript_space(path: str, device: torch.device | str) -> FeatureSpace:
    file = Path(path).expanduser()
    if not file.is_file():
        raise UsageError(
            f"--features {path}: no such file (pass auto, evaluator, imagenet, classifier or a TorchScript .pt file)"
        )
    blob = file.read_bytes()
    try:
        model = torch.jit.load(io.BytesIO(blob), map_location=device).eval()
    except Exception as e:  # torch.jit.load raises RuntimeError, ValueError or pickle's errors on a bad file
        raise UsageError(
            f"--features {path}: not a TorchScript module ({type(e).__name__}); save yours with "
            f"torch.jit.script(model).save(path) or torch.jit.trace"
        ) from None

    @torch.inference_mode()
    def embed(images: torch.Tensor) -> tuple[torch.Tensor, None]:
        out = []
        for chunk in images.split(GPU_BATCH):
            f = model(chunk.to(device).float())
            if not isinstance(f, torch.Tensor) or f.ndim != 2 or len(f) != len(chunk):
                got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
                raise UsageError(
                    f"--features {path}: the module gave {got} for {len(chunk)} images; it must give (images, features)"
                )
            out.append(f.double().cpu())
        return torch.cat(out), None

    return FeatureSpace(f"torchscript:{sha256(blob)[:12]}", f"the features of {file.name} (TorchScript)", embed)
