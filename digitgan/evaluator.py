"""The fixed judge: a small CNN classifier whose penultimate features and class probabilities the metrics use.

It is trained once by `python dcgan.py train-evaluator` and shipped as safetensors beside a JSON record of its
test accuracy and SHA-256; evaluation only loads it (and refuses a file whose hash does not match).
"""
from __future__ import annotations

import json
import time
from copy import deepcopy
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from .files import atomic_write
from .data import load_dataset, sha256
from .errors import UsageError
from .models import fold_batchnorms

SHIPPED = Path(__file__).resolve().parent / "evaluators"
FEATURES = 128


class Evaluator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        block = lambda cin, cout: [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        self.body = nn.Sequential(
            *block(1, 32), nn.MaxPool2d(2),  # (B, 32, 16, 16)
            *block(32, 64), *block(64, 64), nn.MaxPool2d(2),  # (B, 64, 8, 8)
            *block(64, 128), *block(128, FEATURES), nn.MaxPool2d(2),  # (B, 128, 4, 4)
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, 128): the feature space of FID and friends
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURES, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.body(x)))  # (B, 10) logits

    @torch.inference_mode()
    def embed(self, images: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N, 128), class probabilities (N, 10)) in float64 on the CPU, in eval mode.

        Runs a copy with each BatchNorm folded into its convolution, in channels_last, 500 images at a time:
        2.5 times as fast on the CPU as the plain model (bench/results/watch.txt), same function."""
        fast = self.folded().to(memory_format=torch.channels_last)
        device = next(self.parameters()).device
        feats, probs = [], []
        for chunk in images.split(batch):
            f = fast.body(chunk.to(device).float().contiguous(memory_format=torch.channels_last))
            feats.append(f.double().cpu())
            probs.append(F.softmax(fast.head(f), dim=1).double().cpu())
        return torch.cat(feats), torch.cat(probs)

    def folded(self) -> "Evaluator":
        """An eval-mode copy with each BatchNorm folded into the convolution before it."""
        # a copy, not Evaluator(): its random init would draw from the caller's RNG
        return fold_batchnorms(deepcopy(self).eval())


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Translate each image by up to max_shift pixels (background fills in): cheap augmentation."""
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (2, b), generator=gen))
    rows = (torch.arange(h) + dy[:, None])[:, :, None]  # (B, H, 1)
    cols = (torch.arange(w) + dx[:, None])[:, None, :]  # (B, 1, W)
    return padded[torch.arange(b)[:, None, None], 0, rows, cols].unsqueeze(1)


@torch.no_grad()
def accuracy(model: Evaluator, dataset: str, cache_dir: str = "data", data_dir: str = "") -> float:
    test = load_dataset(dataset, "test", data_dir, cache_dir)
    _, probs = model.embed(test.images)
    return (probs.argmax(1) == test.labels).double().mean().item()


def fit_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: int, batch_size: int = 128, seed: int = 0,
                   desc: str = "classifier") -> Evaluator:
    """A fresh Evaluator trained on (images, labels): AdamW with a one-cycle schedule, shifted copies, label
    smoothing; deterministic on the CPU for a given seed. The shipped evaluator and CAS both come from here."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = Evaluator()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    per_epoch = len(images) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * per_epoch)
    model.train()
    for _ in tqdm(range(epochs), desc=desc, unit="epoch"):
        order = torch.randperm(len(images), generator=gen)
        for i in range(per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            loss = F.cross_entropy(model(_shift(images[idx], gen)), labels[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def train_evaluator(dataset: str = "mnist", epochs: int = 6, batch_size: int = 128, seed: int = 0,
                    out_dir: str | Path = SHIPPED, cache_dir: str = "data", data_dir: str = "") -> Path:
    """Train the classifier (deterministic on CPU), test it, write <dataset>.safetensors and <dataset>.json."""
    start = time.perf_counter()
    train = load_dataset(dataset, "train", data_dir, cache_dir)
    model = fit_classifier(train.images, train.labels, epochs, batch_size, seed, desc=f"evaluator ({dataset})")
    acc = accuracy(model, dataset, cache_dir, data_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{dataset}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    record = {"dataset": dataset, "test_accuracy": round(acc, 6), "sha256": sha256(weights.read_bytes()),
              "epochs": epochs, "batch_size": batch_size, "seed": seed, "torch": torch.__version__,
              "train_seconds": round(time.perf_counter() - start, 1),
              "command": f"python dcgan.py train-evaluator --dataset {dataset}"}
    atomic_write(out / f"{dataset}.json", lambda f: f.write(json.dumps(record, indent=2).encode() + b"\n"))
    return weights


def load_evaluator(dataset: str, directory: str | Path = SHIPPED) -> tuple[Evaluator, dict]:
    """The shipped evaluator for dataset (eval mode, CPU) and its record; its SHA-256 must match the record."""
    weights, record_path = Path(directory) / f"{dataset}.safetensors", Path(directory) / f"{dataset}.json"
    if not weights.exists() or not record_path.exists():
        raise UsageError(f"no evaluator for {dataset} in {directory}/: run `python dcgan.py train-evaluator "
                         f"--dataset {dataset}`")
    record = json.loads(record_path.read_text())
    digest = sha256(weights.read_bytes())
    if digest != record["sha256"]:
        raise UsageError(f"{weights} has SHA-256 {digest}, but {record_path.name} records {record['sha256']}: "
                         f"restore the shipped file (git checkout {weights})")
    with torch.device("meta"):  # no random init: it would move torch's global RNG under a training run
        model = Evaluator()
    model.load_state_dict(load_file(str(weights)), assign=True)
    return model.eval(), record
