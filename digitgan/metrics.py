"""Sample-quality metrics in a feature space (features.py), and the real-data reference beside them.

FID here is the Fréchet distance between Gaussians fitted to the features of the space the data chose (the MNIST
or Fashion-MNIST evaluator's 128-d features, or EfficientNet-Lite0's ImageNet features), never Inception's: its
values are comparable between runs of this program in the same space only, and every output names the space.
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import torch

from .config import CLASS_NAMES, DIGITS, Shape, TrainConfig
from .files import read_cache, write_cache
from .data import load_dataset, to_float
from .errors import UsageError
from .evaluator import accuracy, fit_classifier, load_classifier
from .features import feature_space
from .sampling import Generator

KEYS = ("fid", "kid", "kid_std", "inception_score", "precision", "recall", "density", "coverage",
        "classes_covered", "class_kl", "mean_confidence")
CLASS_KEYS = ("class_accuracy", "intra_fid")  # for images drawn as a given class (conditional models)
CSV_KEYS = KEYS + CLASS_KEYS
REFERENCE_SEED = 12345  # which 10,000 training images form the real-data reference
CAS_EPOCHS = 2  # the Classification Accuracy Score's fixed schedule (the shipped evaluator had 6)
FID_MIN_IMAGES = 5000  # real images from which on FID is the headline figure, below it KID (docs/quality.md)


def frechet_distance(mu1: torch.Tensor, s1: torch.Tensor, mu2: torch.Tensor, s2: torch.Tensor) -> float:
    """|mu1 - mu2|^2 + tr(s1 + s2 - 2 (s1 s2)^(1/2)), with tr((s1 s2)^(1/2)) from the symmetric s1^½ s2 s1^½."""
    vals, vecs = torch.linalg.eigh(s1.double())
    root1 = (vecs * vals.clamp(min=0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(root1 @ s2.double() @ root1).clamp(min=0).sqrt().sum()
    return ((mu1 - mu2).double().square().sum() + s1.trace() + s2.trace() - 2 * cross).item()


def gaussian(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return features.mean(0), torch.cov(features.T)


def _subsets(n: int, size: int, subsets: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=gen)[:size] for _ in range(subsets)]


def _cubic(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b.T / a.shape[1] + 1) ** 3


def _off_diagonal_mean(k: torch.Tensor) -> torch.Tensor:
    return (k.sum() - k.diagonal().sum()) / (len(k) * (len(k) - 1))


def kid_real_terms(real: torch.Tensor, size: int, subsets: int = 100, seed: int = 0) -> torch.Tensor:
    """The real side of KID for each subset (mean off-diagonal kernel of that real subset): it depends on the
    real set alone, so a Judge computes it once and every evaluation reuses it."""
    return torch.stack([_off_diagonal_mean(_cubic(real[i], real[i])) for i in _subsets(len(real), size, subsets, seed)])


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, size: int = 1000, seed: int = 0,
        real_terms: dict[int, torch.Tensor] | None = None) -> tuple[float, float]:
    """Unbiased MMD^2 with the cubic polynomial kernel (x.y/d + 1)^3: (mean, std) over random subsets (real and
    fake subsets drawn from their own streams; real_terms: a cache of kid_real_terms by subset size)."""
    size = min(size, len(real), len(fake))
    terms = real_terms if real_terms is not None else {}
    if size not in terms:
        terms[size] = kid_real_terms(real, size, subsets, seed)
    values = [terms[size][s] + _off_diagonal_mean(_cubic(fake[j], fake[j])) - 2 * _cubic(real[i], fake[j]).mean()
              for s, (i, j) in enumerate(zip(_subsets(len(real), size, subsets, seed),
                                              _subsets(len(fake), size, subsets, seed + 1)))]
    v = torch.stack(values).double()
    return v.mean().item(), v.std().item()


def _kth_neighbour_radius(x: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row (the farthest, if x has k rows or fewer)."""
    k = min(k, len(x) - 1)
    out = []
    for part in x.split(chunk):
        # k + 1 smallest includes the point itself at distance 0
        out.append(torch.cdist(part, x).topk(k + 1, largest=False).values[:, -1])
    return torch.cat(out)


def _within(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """(len(points), ) count of balls B(centre, radius) each point falls in; and per-centre hit flags."""
    counts = []
    hit = torch.zeros(len(centres), dtype=torch.bool)
    for part in points.split(chunk):
        inside = torch.cdist(part, centres) <= radii[None, :]
        counts.append(inside.sum(1))
        hit |= inside.any(0)
    return torch.cat(counts), hit


def real_radii(real: torch.Tensor, k_pr: int = 3, k_dc: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """The real set's k-NN radii for precision (k_pr) and density/coverage (k_dc), from one distance pass (a real
    set of k images or fewer, as a tiny folder's hold-out: the farthest other one)."""
    real = real.float()
    k_pr, k_dc = min(k_pr, len(real) - 1), min(k_dc, len(real) - 1)
    near = torch.cat([torch.cdist(part, real).topk(max(k_pr, k_dc) + 1, largest=False).values
                      for part in real.split(2048)])
    return near[:, k_pr], near[:, k_dc]


def precision_recall_density_coverage(real: torch.Tensor, fake: torch.Tensor, k_pr: int = 3, k_dc: int = 5,
                                      radii: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, float]:
    """Kynkäänniemi et al. 2019 precision/recall (k=3) and Naeem et al. 2020 density/coverage (k=5)."""
    real, fake = real.float(), fake.float()
    r_real, r_dc = radii if radii is not None else real_radii(real, k_pr, k_dc)
    r_fake = _kth_neighbour_radius(fake, k_pr)
    in_real, _ = _within(fake, real, r_real)
    in_fake, _ = _within(real, fake, r_fake)
    counts, covered = _within(fake, real, r_dc)
    return {"precision": (in_real > 0).double().mean().item(), "recall": (in_fake > 0).double().mean().item(),
            "density": counts.double().sum().item() / (k_dc * len(fake)), "coverage": covered.double().mean().item()}


def class_statistics(probs: torch.Tensor | None) -> dict[str, Any]:
    """Inception-style score, class histogram, classes covered, KL from uniform, mean confidence (nothing without
    a classifier's probabilities)."""
    if probs is None:
        return {}
    n, c = probs.shape
    p = probs.double().clamp(min=1e-12)
    marginal = p.mean(0)
    score = (p * (p.log() - marginal.log())).sum(1).mean().exp().item()
    hist = torch.bincount(probs.argmax(1), minlength=c)
    share = hist.double() / n
    # A class counts as covered when it gets at least a tenth of its fair share of the samples.
    covered = int((share >= 0.1 / c).sum())
    kl = (share[share > 0] * (share[share > 0] * c).log()).sum().item()
    return {"inception_score": score, "classes_covered": covered, "class_kl": kl,
            "mean_confidence": probs.max(1).values.double().mean().item(), "class_histogram": hist.tolist()}


def compare(real_feats: torch.Tensor, fake_feats: torch.Tensor, fake_probs: torch.Tensor | None,
            radii: tuple[torch.Tensor, torch.Tensor] | None = None,
            kid_terms: dict[int, torch.Tensor] | None = None) -> dict[str, Any]:
    """Every metric of the fake set against the real (test) set (radii, kid_terms: the real set's, if known)."""
    k_mean, k_std = kid(real_feats, fake_feats, real_terms=kid_terms)
    return {"fid": frechet_distance(*gaussian(real_feats), *gaussian(fake_feats)), "kid": k_mean, "kid_std": k_std,
            **precision_recall_density_coverage(real_feats, fake_feats, radii=radii), **class_statistics(fake_probs)}


def class_metrics(feats: torch.Tensor, probs: torch.Tensor | None, labels: torch.Tensor, test_feats: torch.Tensor,
                  test_labels: torch.Tensor) -> dict[str, Any]:
    """For images meant to be of the classes in labels: the share a classifier (probs) classifies as that class
    (overall and per class), and the intra-class FID: the mean over classes of the FID between that class's
    images and that class's test images (classes with fewer than two test images left out). A generator that
    ignores its label scores about 1/classes and a large intra-class FID."""
    classes = [c for c in range(int(labels.max()) + 1) if (test_labels == c).sum() >= 2 and (labels == c).sum() >= 2]
    intra = [frechet_distance(*gaussian(test_feats[test_labels == c]), *gaussian(feats[labels == c])) for c in classes]
    out = {"intra_fid": sum(intra) / len(intra)} if intra else {}
    if probs is not None:
        hit = probs.argmax(1) == labels
        out.update(class_accuracy=hit.double().mean().item(),
                   per_class_accuracy=[hit[labels == c].double().mean().item() for c in range(probs.shape[1])])
    return out


class Judge:
    """A feature space with the real images' features and the real-data reference.

    The real images are the test set (MNIST, Fashion-MNIST) or the seeded hold-out (the emoji, a folder: never
    trained on); the reference is the same figures for real training images, as many as an evaluation draws. All
    of it depends only on the feature space and the data, so it is cached in cache_dir (keyed by both) and an
    evaluation only embeds the generated images. The headline figure is FID where at least FID_MIN_IMAGES real
    images back it, else KID (unbiased at any size: docs/quality.md).
    """

    def __init__(self, dataset: str = "mnist", cache_dir: str = "data", data_dir: str = "",
                 device: torch.device | str = "cpu", reference_num: int = 10_000, resolution: int = 32,
                 channels: int = 0, features: str = "auto"):
        load = lambda split: load_dataset(dataset, split, data_dir, cache_dir, resolution, channels)
        digits = dataset in DIGITS
        test = None if digits else load("test")  # the digits' shape is known without loading them
        shape = test.shape if test else Shape(resolution, 3 if channels == 3 else 1, CLASS_NAMES[dataset])
        self.space = feature_space(features, dataset, shape, cache_dir, device)
        self.classifier = None if digits else load_classifier(dataset, cache_dir, device, resolution, channels)
        self.kid_terms: dict[int, torch.Tensor] = {}  # the real side of KID, filled by the first evaluation
        source = (dataset if (resolution, channels) == (32, 0) else f"{dataset}-{resolution}-{channels}") if digits \
            else f"{Path(dataset).name}-{test.fingerprint}"
        tags = [self.space.name.split(":")[1]] + ([self.classifier.name.split(":")[1]] if self.classifier else [])
        cache = Path(cache_dir) / f"judge4-{source}-{'-'.join(tags)}-{reference_num}.pt"
        blob = None if data_dir else read_cache(cache, "embedding the real images and the reference again")
        saved = torch.load(io.BytesIO(blob), weights_only=True) if blob is not None else {}
        if {"test_feats", "test_labels", "reference", "radii", "test_accuracy"} <= saved.keys():
            self.test_feats, self.test_labels, self.reference = saved["test_feats"], saved["test_labels"], saved["reference"]
            self.radii, self.test_accuracy = saved["radii"], saved["test_accuracy"]
        else:
            real = "test set" if digits else "held-out images"
            print(f"embedding the {dataset} {real} and the real-data reference in {self.space.name} (once: kept in "
                  f"{cache_dir}/)", file=sys.stderr)
            test = test or load("test")
            (self.test_feats, probs), self.test_labels = self.embed(test.images), test.labels
            # the classifier's own record on these real images (None: no classifier)
            self.test_accuracy = None if probs is None else (probs.argmax(1) == self.test_labels).double().mean().item()
            self.radii = real_radii(self.test_feats)
            train = load("train")
            pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(REFERENCE_SEED))[:reference_num]
            # real training images "drawn as" their own classes: the class metrics' reference
            self.reference = {**self.score(to_float(train.pixels[pick]), train.labels[pick] if shape.classes else None),
                              "features": self.space.name}
            if not data_dir and Path(cache_dir).is_dir():
                write_cache(cache, lambda f: torch.save({"test_feats": self.test_feats, "test_labels": self.test_labels,
                                                          "reference": self.reference, "radii": self.radii,
                                                          "test_accuracy": self.test_accuracy}, f))
        self.headline = "fid" if len(self.test_feats) >= FID_MIN_IMAGES else "kid"
        self.eval_num = self.space.eval_num  # generated images per evaluation during training (judge_for)

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(features in the space, class probabilities: the space's own or the data's classifier's, or None)."""
        feats, probs = self.space.embed(images)
        if probs is None and self.classifier is not None:
            probs = self.classifier.embed(images)[1]
        return feats, probs

    def score(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        """Every metric of images against the real ones; with labels (the classes they were drawn as) also the
        class metrics."""
        feats, probs = self.embed(images)
        by_class = class_metrics(feats, probs, labels, self.test_feats, self.test_labels) if labels is not None else {}
        return {**compare(self.test_feats, feats, probs, self.radii, self.kid_terms), **by_class,
                "num_samples": len(images), "real_images": len(self.test_feats)}

    def score_generator(self, generator: Generator, num: int, seed: int = 0) -> dict[str, Any]:
        """Every metric of num images the generator draws from the noise of seed; a conditional model draws a
        balanced set and gets the class metrics too. Training's evaluations and `evaluate` both come here, so the
        same weights give the same figures."""
        labels = generator.labels(num)
        return self.score(generator.draw(generator.noise(num, seed), labels), labels)


def judge_for(cfg: TrainConfig, device: torch.device | str) -> Judge | None:
    """The Judge of a run's evaluations (None when they are off)."""
    if not cfg.eval_every:
        return None
    judge = Judge(cfg.dataset, cfg.cache_dir, cfg.data_dir, device, resolution=cfg.resolution, channels=cfg.channels,
                  features=cfg.features)
    judge.eval_num = cfg.eval_num or judge.eval_num
    return judge


def evaluate_generator(generator: Generator, num: int = 10_000, seed: int = 0, cas_num: int = 0,
                       features: str | None = None) -> dict[str, Any]:
    """Score num samples of the generator (fixed seed: repeatable), with the real-data reference; with cas_num also
    the Classification Accuracy Score from that many generated images (conditional models). features: the
    feature space (default: the run's --features)."""
    cfg = generator.config
    if num < 2:
        raise UsageError(f"--num must be at least 2 to estimate covariances, not {num}")
    if cas_num and not generator.conditional:
        raise UsageError("--cas needs a conditional checkpoint (--conditional on): it trains a classifier on "
                         "generated images labelled by the class they were drawn as")
    judge = Judge(cfg.dataset, cfg.cache_dir, cfg.data_dir, next(generator.module.parameters()).device,
                  resolution=cfg.resolution, channels=cfg.channels, features=features or cfg.features)
    return {**judge.score_generator(generator, num, seed), "step": generator.step, "dataset": cfg.dataset,
            "features": judge.space.name, "features_about": judge.space.about, "headline": judge.headline,
            "classifier": judge.classifier.name if judge.classifier else None,
            "classifier_accuracy": judge.test_accuracy, "real_reference": judge.reference,
            **(classification_accuracy_score(generator, cas_num, seed) if cas_num else {})}


def classification_accuracy_score(generator: Generator, num: int = 60_000, seed: int = 0,
                                  epochs: int = CAS_EPOCHS) -> dict[str, Any]:
    """Ravuri & Vinyals 2019: a fresh classifier (the evaluator's architecture and schedule) trained only on num
    generated images labelled by the class they were drawn as, scored on the real test set (the hold-out for the
    emoji or a folder); beside the same classifier trained on as many real training images (all of them, if
    fewer: then both train for about 3,000 steps). The real one is cached in cfg.cache_dir (it is the same every
    time: the CPU training is deterministic)."""
    cfg = generator.config
    load = lambda split: load_dataset(cfg.dataset, split, cfg.data_dir, cfg.cache_dir, cfg.resolution, cfg.channels)
    train, test = load("train"), load("test")
    num_real = min(num, len(train))
    if cfg.dataset not in DIGITS:
        epochs = max(epochs, min(60, 3000 * 128 // num_real))
    labels, classes = generator.labels(num), len(train.shape.classes)
    fake = fit_classifier(generator.draw(generator.noise(num, seed), labels), labels, epochs, desc="CAS: generated",
                          classes=classes)
    tag = cfg.dataset if cfg.dataset in DIGITS else f"{Path(cfg.dataset).name}-{train.fingerprint}"
    cache = Path(cfg.cache_dir) / f"cas-real-{tag}-{num_real}-{epochs}.json"
    blob = None if cfg.data_dir else read_cache(cache, "training the real-data classifier again")
    if blob is not None:
        real = json.loads(blob)["accuracy"]
    else:
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(REFERENCE_SEED))[:num_real]
        real = accuracy(fit_classifier(to_float(train.pixels[pick]), train.labels[pick], epochs, desc="CAS: real",
                                       classes=classes), test)
        if not cfg.data_dir and Path(cfg.cache_dir).is_dir():
            write_cache(cache, lambda f: f.write(json.dumps({"accuracy": real}).encode()))
    return {"cas": accuracy(fake, test), "cas_real": real, "cas_num": num, "cas_real_num": num_real,
            "cas_epochs": epochs}


def format_table(result: dict[str, Any]) -> str:
    ref = result["real_reference"]
    real = "test set" if result["dataset"] in DIGITS else "held-out images"
    lines = [f"{result['num_samples']} samples from step {result['step']} vs {result['real_images']} {result['dataset']} "
             f"{real}, in {result['features_about']} ({result['features']}; not Inception features: compare only "
             f"with figures of the same space). Headline: {result['headline'].upper()}"
             + ("" if result["headline"] == "fid" else f" (fewer than {FID_MIN_IMAGES} real images: FID is biased)"),
             f"{'metric':<18}{'model':>12}{'real data':>12}   (real data: {ref['num_samples']} training images)"]
    for key in KEYS + CLASS_KEYS:
        if result.get(key) is not None:
            fmt = (lambda v: f"{v:12d}") if key == "classes_covered" else (lambda v: f"{v:12.4f}")
            lines.append(f"{key:<18}{fmt(result[key])}{fmt(ref[key]) if ref.get(key) is not None else '':>12}")
    if "per_class_accuracy" in result:
        lines.append(f"{'per class':<18}" + " ".join(f"{a:.3f}" for a in result["per_class_accuracy"])
                     + "   (real data: " + " ".join(f"{a:.3f}" for a in ref.get("per_class_accuracy", [])) + ")")
    if "class_histogram" in result:
        lines.append(f"{'class histogram':<18}{result['class_histogram']}")
    if "cas" in result:
        lines.append(f"{'CAS':<18}{result['cas']:12.4f}{result['cas_real']:12.4f}   (accuracy on the real {real} of "
                     f"a classifier trained on {result['cas_num']} generated vs {result['cas_real_num']} real images, "
                     f"{result['cas_epochs']} epochs)")
    return "\n".join(lines)
