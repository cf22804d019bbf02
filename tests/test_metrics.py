import json

import pytest
import torch

from digitgan.quality import metrics
from digitgan.data.sources import load_dataset
from digitgan.core.fetch import sha256
from digitgan.quality.evaluator import SHIPPED, load_evaluator


@pytest.fixture(scope="session")
def mnist_test(cache_dir):
    return load_dataset("mnist", "test", cache_dir=cache_dir)


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_shipped_evaluator_matches_its_record(dataset):
    record = json.loads((SHIPPED / f"{dataset}.json").read_text())
    weights = SHIPPED / f"{dataset}.safetensors"
    assert sha256(weights.read_bytes()) == record["sha256"]
    assert weights.stat().st_size < 2_000_000
    assert record["test_accuracy"] >= (0.993 if dataset == "mnist" else 0.91)


def test_shipped_evaluator_really_has_its_recorded_accuracy(judge):
    # measured by the Judge as it embedded the test set with the shipped weights (its cache is keyed by their hash)
    _, record = load_evaluator("mnist")
    assert judge.test_accuracy == pytest.approx(record["test_accuracy"], abs=2e-4)


def test_a_tampered_evaluator_is_refused(tmp_path):
    from digitgan.errors import UsageError
    for suffix in (".safetensors", ".json"):
        (tmp_path / f"mnist{suffix}").write_bytes((SHIPPED / f"mnist{suffix}").read_bytes())
    blob = bytearray((tmp_path / "mnist.safetensors").read_bytes())
    blob[-1] ^= 1
    (tmp_path / "mnist.safetensors").write_bytes(bytes(blob))
    with pytest.raises(UsageError, match="SHA-256"):
        load_evaluator("mnist", tmp_path)


def test_frechet_distance_matches_the_closed_form():
    torch.manual_seed(0)
    d = 6
    mu1, mu2 = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    # diagonal covariances: FD = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = torch.rand(d, dtype=torch.float64) + 0.1, torch.rand(d, dtype=torch.float64) + 0.1
    expected = (mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum()
    assert metrics.frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected.item(), rel=1e-9)
    # a full covariance against c*I: tr((cI S)^1/2) = sqrt(c) * sum sqrt(eig(S))
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    eig = torch.rand(d, dtype=torch.float64) + 0.1
    s = q @ torch.diag(eig) @ q.T
    c = 2.5
    expected = (mu1 - mu2).square().sum() + d * c + eig.sum() - 2 * (c ** 0.5) * eig.sqrt().sum()
    assert metrics.frechet_distance(mu1, c * torch.eye(d, dtype=torch.float64), mu2, s) == \
        pytest.approx(expected.item(), rel=1e-9)
    # and estimated from samples of those Gaussians
    x = mu1 + (c ** 0.5) * torch.randn(200_000, d, dtype=torch.float64)
    y = mu2 + torch.randn(200_000, d, dtype=torch.float64) @ (q @ torch.diag(eig.sqrt()) @ q.T)
    assert metrics.frechet_distance(*metrics.gaussian(x), *metrics.gaussian(y)) == pytest.approx(expected.item(), rel=0.02)


@pytest.mark.parametrize("rows", [(30, 20), (20, 300), (300, 400)])
def test_fid_from_fewer_pictures_than_dimensions_is_the_full_computation(rows):
    """fid() takes tr((s1 s2)^1/2) from the smaller set's rows where it has fewer than the features' dimensions
    (the emoji's classes in ImageNet features): the figure of the d x d computation done in float64."""
    torch.manual_seed(0)
    d = 200
    mix = torch.randn(d, d) / d ** 0.5
    x, y = torch.randn(rows[0], d) @ mix + 0.1, torch.randn(rows[1], d) @ (1.3 * mix)
    full = metrics.frechet_distance(*metrics.gaussian(x.double()), *metrics.gaussian(y.double()))
    assert metrics.fid(x, y) == pytest.approx(full, rel=1e-6)
    assert metrics.fid(y, x) == pytest.approx(full, rel=1e-6)  # the same distance either way round


def test_identical_sets_score_perfectly(judge):
    feats = judge.test_feats[:2000]  # any set will do; 2,000 keep the pairwise distances cheap
    same = metrics.precision_recall_density_coverage(feats, feats)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    assert abs(metrics.frechet_distance(*metrics.gaussian(feats), *metrics.gaussian(feats))) < 1e-6


def test_real_training_images_score_close_to_the_test_set(judge):
    ref = judge.reference
    assert ref["fid"] < 1.0 and abs(ref["kid"]) < 1e-3
    assert ref["precision"] > 0.7 and ref["recall"] > 0.7 and 0.8 < ref["density"] < 1.2 and ref["coverage"] > 0.9
    assert ref["classes_covered"] == 10 and ref["class_kl"] < 0.01 and ref["mean_confidence"] > 0.9
    assert ref["inception_score"] > 7  # below 10: the evaluator was trained with label smoothing


def _one_class(test, digit, n=2000):
    ones = test.images[test.labels == digit]
    return ones[torch.randint(len(ones), (n,), generator=torch.Generator().manual_seed(0))]


@pytest.mark.parametrize("kind", ["noise", "blank", "one_class"])
def test_bad_generators_get_clearly_bad_scores(judge, mnist_test, kind):
    n = 1000
    images = {"noise": lambda: torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1,
              "blank": lambda: -torch.ones(n, 1, 32, 32),
              "one_class": lambda: _one_class(mnist_test, 1, n)}[kind]()
    s = judge.score(images)
    ref = judge.reference
    assert s["fid"] > 50 * max(ref["fid"], 0.1)
    assert s["recall"] < 0.2 and s["classes_covered"] <= 2 and s["class_kl"] > 1.5
    if kind == "one_class":
        assert s["classes_covered"] == 1 and s["class_histogram"][1] > 0.95 * n
        assert s["inception_score"] < 1.5 and s["coverage"] < 0.2
