"""The evaluator: a small CNN classifier whose penultimate features and class probabilities the metrics use.

For MNIST and Fashion-MNIST it is trained once by `python dcgan.py train-evaluator` and shipped as safetensors
beside a JSON record of its test accuracy and SHA-256; evaluation only loads it (and refuses a file whose hash
does not match). For the emoji or a labelled folder, `train-evaluator --dataset ...` trains the same network on
the training images into the data cache, where it gives conditional runs their class figures (load_classifier).
"""

from __future__ import annotations

import json
import time
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from tqdm import tqdm

from ..config import TrainConfig, cache_home
from ..core.devices import channels_last
from ..core.fetch import sha256
from ..core.files import atomic_write
from ..data.dataset import Dataset, as_images
from ..data.source import Source
from ..data.sources import load_dataset, source
from ..errors import UsageError
from ..nets.augment import Randoms, translate
from ..nets.convs import fold_batchnorms

SHIPPED = Path(__file__).resolve().parent / "evaluators"
FEATURES = 128


class Evaluator(nn.Module):
    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        block = lambda cin, cout: [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        self.body = nn.Sequential(
            *block(channels, 32),
            nn.MaxPool2d(2),  # (B, 32, R/2, R/2)
            *block(32, 64),
            *block(64, 64),
            nn.MaxPool2d(2),  # (B, 64, R/4, R/4)
            *block(64, 128),
            *block(128, FEATURES),
            nn.MaxPool2d(2),  # (B, 128, R/8, R/8)
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),  # (B, 128): the digits' feature space of FID and friends
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURES, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.body(x)))  # (B, 10) logits

    @torch.inference_mode()
    def embed(self, images: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N, 128), class probabilities (N, classes)) in float64 on the CPU, in eval mode.

        Runs a copy with each BatchNorm folded into its convolution, in channels_last, 500 images at a time:
        2.5 times as fast on the CPU as the plain model (bench/results/watch.txt), same function."""
        fast = channels_last(self.folded())
        device = next(self.parameters()).device
        feats, probs = [], []
        for chunk in images.split(batch):
            f = fast.body(as_images(chunk.to(device)).float().contiguous(memory_format=torch.channels_last))
            feats.append(f.double().cpu())
            probs.append(F.softmax(fast.head(f), dim=1).double().cpu())
        return torch.cat(feats), torch.cat(probs)

    def folded(self) -> Evaluator:
        """An eval-mode copy with each BatchNorm folded into the convolution before it."""
        # a copy, not Evaluator(): its random init would draw from the caller's RNG
        return fold_batchnorms(deepcopy(self).eval())


@torch.no_grad()
def accuracy(model: Evaluator, test: Dataset) -> float:
    """The share of test's images the model classifies right."""
    _, probs = model.embed(test.pixels)
    return (probs.argmax(1) == test.labels).double().mean().item()


LEAST_STEPS = 60  # at ~22 the one-cycle schedule ends before the classifier learns (docs/quality.md)


def classifier_epochs(src: Source, images: int, fixed: int, least: int, batch_size: int = 128) -> int:
    """How many epochs a classifier of src's pictures trains: on data with a shipped evaluator the fixed count (as
    that evaluator was trained), or more where `images` are too few for LEAST_STEPS in it; on smaller data about
    3,000 steps' worth of `images`, at least `least` and at most 60."""
    if src.evaluator:
        return max(fixed, -(-LEAST_STEPS // max(1, images // batch_size)))
    return max(least, min(60, 3000 * batch_size // images))


def fit_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int = 128,
    seed: int = 0,
    desc: str = "classifier",
    classes: int = 0,
) -> Evaluator:
    """A fresh Evaluator trained on (images, labels): AdamW with a one-cycle schedule, shifted copies, label
    smoothing; deterministic on the CPU for a given seed. The shipped evaluator and CAS both come from here."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    # trained in channels_last (the CPU's faster layout for these convolutions); handed back in the plain layout,
    # as it is saved
    model = channels_last(Evaluator(images.shape[1], classes or int(labels.max()) + 1))
    batch_size = min(batch_size, len(images))  # a small folder's classifier
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    per_epoch = len(images) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * per_epoch)
    model.train()
    for _ in tqdm(range(epochs), desc=desc, unit="epoch"):
        order = torch.randperm(len(images), generator=gen)
        for i in range(per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            loss = F.cross_entropy(
                model(
                    translate(as_images(images[idx]), 2, Randoms(gen, len(idx)), fill=-1.0).contiguous(
                        memory_format=torch.channels_last
                    )
                ),
                labels[idx],
                label_smoothing=0.05,
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.to(memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]


def train_evaluator(
    dataset: str = TrainConfig.dataset,
    epochs: int = 0,
    batch_size: int = 128,
    seed: int = 0,
    out_dir: str | Path = SHIPPED,
    cache_dir: str = TrainConfig.cache_dir,
    data_dir: str = "",
    resolution: int = TrainConfig.resolution,
    channels: int = TrainConfig.channels,
) -> Path:
    """Train the classifier (deterministic on CPU), test it, write its weights and a JSON record beside them:
    <dataset>.safetensors in out_dir for MNIST and Fashion-MNIST; for the emoji or a labelled folder, into
    cache_dir where load_classifier finds it, tested on the held-out images. epochs 0: 6 for the digits, and
    for smaller data enough epochs for about 3,000 steps (at most 60)."""
    start = time.perf_counter()
    src, cache_dir = source(dataset), cache_home(cache_dir)

    def load(split: str) -> Dataset:
        return src.load(split, resolution, channels, cache_dir, data_dir)

    train = load("train")
    classes = len(train.shape.classes)
    if classes < 2:
        raise UsageError(
            f"train-evaluator --dataset {dataset}: a classifier needs classes, and {dataset} has none: "
            + (
                f"its figures are read by the shipped {src.evaluator} evaluator"
                if src.evaluator
                else "put its pictures into two or more subfolders, one per class"
            )
        )
    epochs = epochs or classifier_epochs(src, len(train), fixed=6, least=1, batch_size=batch_size)
    model = fit_classifier(train.pixels, train.labels, epochs, batch_size, seed, f"evaluator ({dataset})", classes)
    acc = accuracy(model, load("test"))
    weights = Path(out_dir) / f"{src.evaluator}.safetensors" if src.evaluator else classifier_file(train, cache_dir)
    weights.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(
        weights, lambda f: f.write(safetensors_bytes({k: v.contiguous() for k, v in model.state_dict().items()}))
    )
    record = {
        "dataset": dataset,
        "test_accuracy": round(acc, 6),
        "sha256": sha256(weights.read_bytes()),
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "torch": torch.__version__,
        "train_seconds": round(time.perf_counter() - start, 1),
        "command": f"python dcgan.py train-evaluator --dataset {dataset}",
    }
    if not src.evaluator:
        record.update(
            test_images=f"{len(load('test'))} held-out images",
            shape=train.shape.to_dict(),
            fingerprint=train.fingerprint,
            command=f"{record['command']} --resolution {resolution} --channels {channels}",
        )
    atomic_write(weights.with_suffix(".json"), lambda f: f.write(json.dumps(record, indent=2).encode() + b"\n"))
    return weights


def classifier_file(train: Dataset, cache_dir: str | Path) -> Path:
    """Where train-evaluator keeps the classifier of the emoji or a folder: named by what it was trained on."""
    return Path(cache_dir) / f"classifier-{Path(train.name).name}-{train.fingerprint}.safetensors"


@dataclass
class Classifier:
    name: str  # "classifier:<first 12 hex digits of its SHA-256>"
    model: Evaluator

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.embed(images)


def load_classifier(
    dataset: str, cache_dir: str | Path, device: torch.device | str, resolution: int = 32, channels: int = 0
) -> Classifier | None:
    """The classifier train-evaluator made for the emoji or a labelled folder at this shape, or None."""
    train = load_dataset(dataset, "train", "", str(cache_dir), resolution, channels)
    weights = classifier_file(train, cache_dir)
    if not weights.exists() or not weights.with_suffix(".json").exists():
        return None
    digest = sha256(weights.read_bytes())
    if digest != json.loads(weights.with_suffix(".json").read_text())["sha256"]:
        raise UsageError(
            f"{weights} does not match the SHA-256 in its record: delete it and run `python dcgan.py "
            f"train-evaluator --dataset {dataset} --resolution {resolution} --channels {channels}` again"
        )
    with torch.device("meta"):  # no random init: it would move torch's global RNG under a training run
        model = Evaluator(train.shape.channels, len(train.shape.classes))
    model.load_state_dict(load_file(str(weights)), assign=True)
    return Classifier(f"classifier:{digest[:12]}", model.eval().to(device))


def load_evaluator(dataset: str, directory: str | Path = SHIPPED) -> tuple[Evaluator, dict]:
    """The shipped evaluator of a dataset (eval mode, CPU) and its record; its SHA-256 must match the record."""
    src = source(dataset)
    weights, record_path = Path(directory) / f"{dataset}.safetensors", Path(directory) / f"{dataset}.json"
    if not weights.exists() or not record_path.exists():
        raise UsageError(
            f"no evaluator for {dataset} in {directory}/: run `python dcgan.py train-evaluator --dataset {dataset}`"
        )
    record = json.loads(record_path.read_text())
    digest = sha256(weights.read_bytes())
    if digest != record["sha256"]:
        raise UsageError(
            f"{weights} has SHA-256 {digest}, but {record_path.name} records {record['sha256']}: "
            f"restore the shipped file (git checkout {weights})"
        )
    shape = src.evaluator_shape
    if shape is None:
        raise UsageError(f"{dataset} has no shipped evaluator: pass --features imagenet (or auto)")
    with torch.device("meta"):  # no random init: it would move torch's global RNG under a training run
        model = Evaluator(shape.channels, len(shape.classes))
    model.load_state_dict(load_file(str(weights)), assign=True)
    return model.eval(), record
