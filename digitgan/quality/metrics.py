"""The sample-quality metrics of a set of generated images' features against real ones: FID, KID, precision and
recall, density and coverage, and the class statistics of a classifier's probabilities. The features are those of
the space the data chose (features.py), never Inception's: the figures compare between runs in the same space only.
"""

from __future__ import annotations

from typing import Any

import torch

KEYS = (
    "fid",
    "kid",
    "kid_std",
    "inception_score",
    "precision",
    "recall",
    "density",
    "coverage",
    "classes_covered",
    "class_kl",
    "mean_confidence",
    "modes",
    "mode_kl",
)
# for images drawn as a given class (conditional models)
CLASS_KEYS = ("class_accuracy", "intra_fid", "class_recall", "class_coverage", "least_class_coverage")
CSV_KEYS = KEYS + CLASS_KEYS


def frechet_distance(mu1: torch.Tensor, s1: torch.Tensor, mu2: torch.Tensor, s2: torch.Tensor) -> float:
    """|mu1 - mu2|^2 + tr(s1 + s2 - 2 (s1 s2)^(1/2)), with tr((s1 s2)^(1/2)) from the symmetric s1^½ s2 s1^½."""
    vals, vecs = torch.linalg.eigh(s1.double())
    root1 = (vecs * vals.clamp(min=0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(root1 @ s2.double() @ root1).clamp(min=0).sqrt().sum()
    return ((mu1 - mu2).double().square().sum() + s1.trace() + s2.trace() - 2 * cross).item()


def gaussian(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return features.mean(0), torch.cov(features.T)


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """The Fréchet distance between the Gaussians of two feature sets (rows). Where a set has fewer rows than the
    features have dimensions (a class's few pictures, or the emoji's 379 held-out ones, in 1,280-d ImageNet
    features), tr((s1 s2)^(1/2)) comes from that set's rows: with s = A A^T (A its centred rows over sqrt(n - 1)),
    the nonzero eigenvalues of s1 s2 are those of the n x n matrix A^T s_other A, so no d x d root is taken."""
    (mu1, s1), (mu2, s2) = gaussian(real), gaussian(fake)
    few, other = (real, s2) if len(real) <= len(fake) else (fake, s1)
    if len(few) >= real.shape[1]:
        return frechet_distance(mu1, s1, mu2, s2)
    rows = (few.double() - few.double().mean(0)) / (len(few) - 1) ** 0.5
    cross = torch.linalg.eigvalsh(rows @ other.double() @ rows.T).clamp(min=0).sqrt().sum()
    return ((mu1 - mu2).double().square().sum() + s1.double().trace() + s2.double().trace() - 2 * cross).item()


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


def kid(
    real: torch.Tensor,
    fake: torch.Tensor,
    subsets: int = 100,
    size: int = 1000,
    seed: int = 0,
    real_terms: dict[int, torch.Tensor] | None = None,
) -> tuple[float, float]:
    """Unbiased MMD^2 with the cubic polynomial kernel (x.y/d + 1)^3: (mean, std) over random subsets (real and
    fake subsets drawn from their own streams; real_terms: a cache of kid_real_terms by subset size)."""
    size = min(size, len(real), len(fake))
    terms = real_terms if real_terms is not None else {}
    if size not in terms:
        terms[size] = kid_real_terms(real, size, subsets, seed)
    values = [
        terms[size][s] + _off_diagonal_mean(_cubic(fake[j], fake[j])) - 2 * _cubic(real[i], fake[j]).mean()
        for s, (i, j) in enumerate(
            zip(_subsets(len(real), size, subsets, seed), _subsets(len(fake), size, subsets, seed + 1))
        )
    ]
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


def _within(
    points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048
) -> tuple[torch.Tensor, torch.Tensor]:
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
    near = torch.cat(
        [torch.cdist(part, real).topk(max(k_pr, k_dc) + 1, largest=False).values for part in real.split(2048)]
    )
    return near[:, k_pr], near[:, k_dc]


def precision_recall_density_coverage(
    real: torch.Tensor,
    fake: torch.Tensor,
    k_pr: int = 3,
    k_dc: int = 5,
    radii: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Kynkäänniemi et al. 2019 precision/recall (k=3) and Naeem et al. 2020 density/coverage (k=5)."""
    real, fake = real.float(), fake.float()
    r_real, r_dc = radii if radii is not None else real_radii(real, k_pr, k_dc)
    r_fake = _kth_neighbour_radius(fake, k_pr)
    in_real, _ = _within(fake, real, r_real)
    in_fake, _ = _within(real, fake, r_fake)
    counts, covered = _within(fake, real, r_dc)
    return {
        "precision": (in_real > 0).double().mean().item(),
        "recall": (in_fake > 0).double().mean().item(),
        "density": counts.double().sum().item() / (k_dc * len(fake)),
        "coverage": covered.double().mean().item(),
    }


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
    return {
        "inception_score": score,
        "classes_covered": covered,
        "class_kl": kl,
        "mean_confidence": probs.max(1).values.double().mean().item(),
        "class_histogram": hist.tolist(),
    }


def mode_statistics(modes: torch.Tensor, count: int) -> dict[str, Any]:
    """How many of the data's count modes the pictures hit at least once, and KL(their modes' histogram || uniform)
    (VEEGAN's and PacGAN's figures on Stacked MNIST; 0 for a perfectly even spread)."""
    share = torch.bincount(modes, minlength=count).double() / len(modes)
    hit = share[share > 0]
    return {"modes": len(hit), "mode_kl": (hit * (hit * count).log()).sum().item()}


def compare(
    real_feats: torch.Tensor,
    fake_feats: torch.Tensor,
    fake_probs: torch.Tensor | None,
    radii: tuple[torch.Tensor, torch.Tensor] | None = None,
    kid_terms: dict[int, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Every metric of the fake set against the real (test) set (radii, kid_terms: the real set's, if known)."""
    k_mean, k_std = kid(real_feats, fake_feats, real_terms=kid_terms)
    return {
        "fid": fid(real_feats, fake_feats),
        "kid": k_mean,
        "kid_std": k_std,
        **precision_recall_density_coverage(real_feats, fake_feats, radii=radii),
        **class_statistics(fake_probs),
    }


def class_metrics(
    feats: torch.Tensor,
    probs: torch.Tensor | None,
    labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
) -> dict[str, Any]:
    """For images meant to be of the classes in labels: the share a classifier (probs) classifies as that class
    (overall and per class); the intra-class FID, the mean over classes of the FID between that class's images and
    that class's test images; and the recall and coverage of each class's images against that class's test images
    (mean, least, and per class; classes with fewer than two images of either kind left out). A generator that
    ignores its label scores about 1/classes and a large intra-class FID; one that draws a single style per class,
    a low class recall."""
    classes = [c for c in range(int(labels.max()) + 1) if (test_labels == c).sum() >= 2 and (labels == c).sum() >= 2]
    intra = [fid(test_feats[test_labels == c], feats[labels == c]) for c in classes]
    out: dict[str, Any] = {"intra_fid": sum(intra) / len(intra)} if intra else {}
    # diversity within each class: recall and coverage against that class's real images alone (a model that draws
    # one handwriting per digit is precise and well classified, and low here)
    each = [precision_recall_density_coverage(test_feats[test_labels == c], feats[labels == c]) for c in classes]
    if each:
        recall, coverage = [e["recall"] for e in each], [e["coverage"] for e in each]
        by_label = lambda figures: [dict(zip(classes, figures)).get(c) for c in range(int(labels.max()) + 1)]
        out.update(
            class_recall=sum(recall) / len(recall),
            class_coverage=sum(coverage) / len(coverage),
            least_class_coverage=min(coverage),
            per_class_recall=by_label(recall),  # None where a class was left out
            per_class_coverage=by_label(coverage),
        )
    if probs is not None:
        hit = probs.argmax(1) == labels
        out.update(
            class_accuracy=hit.double().mean().item(),
            per_class_accuracy=[hit[labels == c].double().mean().item() for c in range(probs.shape[1])],
        )
    return out
