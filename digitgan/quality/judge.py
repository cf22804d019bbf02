"""The Judge: a feature space with the real images' features (the test set, or the hold-out) and the real-data
reference, cached; how a run's generator is scored during training and by `evaluate`, the Classification Accuracy
Score, and the table `evaluate` prints."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig, cache_home
from ..core.files import read_cache, write_cache
from ..data.dataset import Dataset, as_images
from ..data.sources import source
from ..errors import UsageError
from ..nets.drawing import Generator
from .evaluator import accuracy, classifier_epochs, fit_classifier, load_classifier
from .features import feature_space
from .metrics import CLASS_KEYS, KEYS, class_metrics, compare, mode_statistics, real_radii

REFERENCE_SEED = 12345  # which training images form the real-data reference
REFERENCE_NUM = 10_000  # how many, unless an evaluation draws more
CAS_EPOCHS = 2  # the Classification Accuracy Score's fixed schedule (the shipped evaluator had 6)
EMBED_CHUNK = 1000  # images embedded at a time (a multiple of the evaluator's 500 and the ImageNet network's 2)
FID_MIN_IMAGES = 5000  # real images from which on FID is the headline figure, below it KID (docs/quality.md)


class Judge:
    """A feature space with the real images' features and the real-data reference.

    The real images are the test set (MNIST, Fashion-MNIST) or the seeded hold-out (the emoji, a folder: never
    trained on); the reference is the same figures for real training images, as many as an evaluation draws. All
    of it depends only on the feature space and the data, so it is cached in cache_dir (keyed by both) and an
    evaluation only embeds the generated images. The headline figure is FID where at least FID_MIN_IMAGES real
    images back it, else KID (unbiased at any size: docs/quality.md).
    """

    def __init__(
        self,
        dataset: str = TrainConfig.dataset,
        cache_dir: str = TrainConfig.cache_dir,
        data_dir: str = "",
        device: torch.device | str = "cpu",
        reference_num: int = REFERENCE_NUM,
        resolution: int = TrainConfig.resolution,
        channels: int = TrainConfig.channels,
        features: str = TrainConfig.features,
    ):
        src, cache_dir = source(dataset), cache_home(cache_dir)
        self.source = src

        def load(split: str) -> Dataset:
            return src.load(split, resolution, channels, cache_dir, data_dir)

        test, shape = None, src.known_shape(resolution, channels)
        if shape is None:  # else the real images wait for a cache miss
            test = load("test")
            shape = test.shape
        self.space = feature_space(features, src, shape, cache_dir, device)
        # class probabilities: the shipped evaluator's, in its space; else a classifier train-evaluator made
        self.classifier = None if src.evaluator else load_classifier(dataset, cache_dir, device, resolution, channels)
        self.kid_terms: dict[int, torch.Tensor] = {}  # the real side of KID, filled by the first evaluation
        tags = [self.space.name.split(":")[1]] + ([self.classifier.name.split(":")[1]] if self.classifier else [])
        cache = Path(cache_dir) / f"judge5-{src.tag(resolution, channels, test)}-{'-'.join(tags)}-{reference_num}.pt"
        blob = None if data_dir else read_cache(cache, "embedding the real images and the reference again")
        saved = torch.load(io.BytesIO(blob), weights_only=True) if blob is not None else {}
        if {"test_feats", "test_labels", "reference", "radii", "test_accuracy"} <= saved.keys():
            self.test_feats, self.test_labels, self.reference = (
                saved["test_feats"],
                saved["test_labels"],
                saved["reference"],
            )
            self.radii, self.test_accuracy = saved["radii"], saved["test_accuracy"]
        else:
            print(
                f"embedding the {dataset} {src.test_set} and the real-data reference in {self.space.name} "
                f"(once: kept in {cache_dir}/)",
                file=sys.stderr,
            )
            test = test or load("test")
            (self.test_feats, probs), self.test_labels = self.embed(test.pixels), test.labels
            # the classifier's own record on these real images (None: no classifier)
            self.test_accuracy = None if probs is None else (probs.argmax(1) == self.test_labels).double().mean().item()
            self.radii = real_radii(self.test_feats)
            train = load("train")
            pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(REFERENCE_SEED))[:reference_num]
            # real training images "drawn as" their own classes: the class metrics' reference
            self.reference = {
                **self.score(train.pixels, train.labels[pick] if shape.classes else None, pick),
                "features": self.space.name,
            }
            if not data_dir and Path(cache_dir).is_dir():
                write_cache(
                    cache,
                    lambda f: torch.save(
                        {
                            "test_feats": self.test_feats,
                            "test_labels": self.test_labels,
                            "reference": self.reference,
                            "radii": self.radii,
                            "test_accuracy": self.test_accuracy,
                        },
                        f,
                    ),
                )
        self.headline = "fid" if len(self.test_feats) >= FID_MIN_IMAGES else "kid"
        self.eval_num = self.space.eval_num  # generated images per evaluation during training (judge_for)

    def embed(self, images: torch.Tensor, pick: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(features in the space, class probabilities: the space's own or the data's classifier's, or None) of
        images in [-1, 1] or uint8 pixels (with pick, of images[pick]), gathered and embedded EMBED_CHUNK at a
        time: a set of pictures is never in memory whole, as float32 or as a gathered copy."""
        chunks = images.split(EMBED_CHUNK) if pick is None else (images[rows] for rows in pick.split(EMBED_CHUNK))
        feats, probs = [], []
        for chunk in chunks:
            chunk = as_images(chunk)
            f, p = self.space.embed(chunk)
            if p is None and self.classifier is not None:
                p = self.classifier.embed(chunk)[1]
            feats.append(f)
            probs.append(p)
        return torch.cat(feats), _joined(probs)

    def score(
        self, images: torch.Tensor, labels: torch.Tensor | None = None, pick: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """Every metric of images (in [-1, 1], or uint8 pixels; with pick, of images[pick]) against the real ones;
        with labels (the classes they were drawn as) also the class metrics."""
        return self.figures(*self.embed(images, pick), labels)

    def figures(self, feats: torch.Tensor, probs: torch.Tensor | None, labels: torch.Tensor | None) -> dict[str, Any]:
        """Every metric of a set of images' features (and class probabilities) against the real ones."""
        by_class = class_metrics(feats, probs, labels, self.test_feats, self.test_labels) if labels is not None else {}
        modes = self.space.modes
        return {
            **compare(self.test_feats, feats, probs, self.radii, self.kid_terms),
            **by_class,
            **(mode_statistics(modes(feats), self.space.mode_count) if modes else {}),
            "num_samples": len(feats),
            "real_images": len(self.test_feats),
        }

    def score_generator(self, generator: Generator, num: int, seed: int = 0) -> dict[str, Any]:
        """Every metric of num images the generator draws from the noise of seed; a conditional model draws a
        balanced set and gets the class metrics too. Training's evaluations and `evaluate` both come here, so the
        same weights give the same figures."""
        labels, z = generator.labels(num), generator.noise(num, seed)
        parts = [
            self.embed(generator.draw(z[i : i + EMBED_CHUNK], None if labels is None else labels[i : i + EMBED_CHUNK]))
            for i in range(0, num, EMBED_CHUNK)
        ]  # drawn and embedded a chunk at a time: never all the images at once
        return self.figures(torch.cat([f for f, _ in parts]), _joined([p for _, p in parts]), labels)


def _joined(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    """The chunks' class probabilities as one tensor (None where the space has none)."""
    kept = [p for p in parts if p is not None]
    return torch.cat(kept) if kept else None


def judge_for(cfg: TrainConfig, device: torch.device | str) -> Judge | None:
    """The Judge of a run's evaluations (None when they are off)."""
    if not cfg.eval_every:
        return None
    judge = Judge(
        cfg.dataset,
        cfg.cache_dir,
        cfg.data_dir,
        device,
        resolution=cfg.resolution,
        channels=cfg.channels,
        features=cfg.features,
    )
    judge.eval_num = cfg.eval_num or judge.eval_num
    return judge


def evaluate_generator(
    generator: Generator, num: int = 10_000, seed: int = 0, cas_num: int = 0, features: str | None = None
) -> dict[str, Any]:
    """Score num samples of the generator (fixed seed: repeatable), with the real-data reference; with cas_num also
    the Classification Accuracy Score from that many generated images (conditional models). features: the
    feature space (default: the run's --features)."""
    cfg = generator.config
    if num < 2:
        raise UsageError(f"--num must be at least 2 to estimate covariances, not {num}")
    if cas_num and not generator.conditional:
        raise UsageError(
            "--cas needs a conditional checkpoint (--conditional on): it trains a classifier on "
            "generated images labelled by the class they were drawn as"
        )
    judge = Judge(
        cfg.dataset,
        cfg.cache_dir,
        cfg.data_dir,
        next(generator.module.parameters()).device,
        reference_num=max(num, REFERENCE_NUM),  # the real data's figures at as many samples as the model's
        resolution=cfg.resolution,
        channels=cfg.channels,
        features=features or cfg.features,
    )
    return {
        **judge.score_generator(generator, num, seed),
        "step": generator.step,
        "dataset": cfg.dataset,
        "features": judge.space.name,
        "features_about": judge.space.about,
        "headline": judge.headline,
        "classifier": judge.classifier.name if judge.classifier else None,
        "classifier_accuracy": judge.test_accuracy,
        "real_reference": judge.reference,
        **(classification_accuracy_score(generator, cas_num, seed) if cas_num else {}),
    }


def classification_accuracy_score(
    generator: Generator, num: int = 60_000, seed: int = 0, epochs: int = CAS_EPOCHS
) -> dict[str, Any]:
    """Ravuri & Vinyals 2019: a fresh classifier (the evaluator's architecture and schedule) trained only on num
    generated images labelled by the class they were drawn as, scored on the real test set (the hold-out for the
    emoji or a folder); beside the same classifier trained on as many real training images (all of them, if
    fewer: then both train for about 3,000 steps)."""
    cfg = generator.config
    real, num_real, epochs = real_data_cas(cfg, num, epochs)
    src = source(cfg.dataset)
    test = src.load("test", cfg.resolution, cfg.channels, cfg.cache_dir, cfg.data_dir)
    labels = generator.labels(num)
    assert labels is not None  # refused above for an unconditional model
    fake = fit_classifier(
        generator.draw(generator.noise(num, seed), labels),
        labels,
        epochs,
        desc="CAS: generated",
        classes=len(test.shape.classes),
    )
    return {
        "cas": accuracy(fake, test),
        "cas_real": real,
        "cas_num": num,
        "cas_real_num": num_real,
        "cas_epochs": epochs,
    }


def real_data_cas(cfg: TrainConfig, num: int, epochs: int = CAS_EPOCHS) -> tuple[float, int, int]:
    """(test accuracy, images, epochs) of the CAS classifier trained on num real training images (a seeded pick;
    all of them, if fewer), with the schedule CAS gives num images. Cached in cfg.cache_dir: it is the same every
    time (the CPU training is deterministic); `make test` makes MNIST's before the suite, as it makes the
    evaluators' test-set features."""
    src = source(cfg.dataset)
    train, test = (
        src.load(split, cfg.resolution, cfg.channels, cfg.cache_dir, cfg.data_dir) for split in ("train", "test")
    )
    num = min(num, len(train))
    epochs = classifier_epochs(src, num, fixed=epochs, least=epochs)
    cache = Path(cfg.cache_dir) / f"cas-real-{src.tag(cfg.resolution, cfg.channels, train)}-{num}-{epochs}.json"
    blob = None if cfg.data_dir else read_cache(cache, "training the real-data classifier again")
    if blob is not None:
        return float(json.loads(blob)["accuracy"]), num, epochs
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(REFERENCE_SEED))[:num]
    model = fit_classifier(
        train.pixels[pick], train.labels[pick], epochs, desc="CAS: real", classes=len(train.shape.classes)
    )
    real = accuracy(model, test)
    if not cfg.data_dir and Path(cfg.cache_dir).is_dir():
        write_cache(cache, lambda f: f.write(json.dumps({"accuracy": real}).encode()))
    return real, num, epochs


def format_table(result: dict[str, Any]) -> str:
    ref = result["real_reference"]
    real = source(result["dataset"]).test_set
    lines = [
        f"{result['num_samples']} samples from step {result['step']} vs {result['real_images']} {result['dataset']} "
        f"{real}, in {result['features_about']} ({result['features']}; not Inception features: compare only "
        f"with figures of the same space). Headline: {result['headline'].upper()}"
        + ("" if result["headline"] == "fid" else f" (fewer than {FID_MIN_IMAGES} real images: FID is biased)"),
        f"{'metric':<18}{'model':>12}{'real data':>12}   (real data: {ref['num_samples']} training images)",
    ]
    for key in KEYS + CLASS_KEYS:
        if result.get(key) is not None:
            fmt = (lambda v: f"{v:12d}") if key in ("classes_covered", "modes") else (lambda v: f"{v:12.4f}")
            lines.append(f"{key:<18}{fmt(result[key])}{fmt(ref[key]) if ref.get(key) is not None else '':>12}")
    each = lambda figures: " ".join("-" if a is None else f"{a:.3f}" for a in figures)
    for key, name in (("accuracy", "per class"), ("recall", "recall by class"), ("coverage", "coverage by class")):
        if f"per_class_{key}" in result:
            lines.append(
                f"{name:<18}{each(result[f'per_class_{key}'])}   (real data: {each(ref.get(f'per_class_{key}', []))})"
            )
    if "class_histogram" in result:
        lines.append(f"{'class histogram':<18}{result['class_histogram']}")
    if "cas" in result:
        lines.append(
            f"{'CAS':<18}{result['cas']:12.4f}{result['cas_real']:12.4f}   (accuracy on the real {real} of "
            f"a classifier trained on {result['cas_num']} generated vs {result['cas_real_num']} real images, "
            f"{result['cas_epochs']} epochs)"
        )
    return "\n".join(lines)
