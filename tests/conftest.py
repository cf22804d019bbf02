import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from digitgan.data import prepare_mnist  # noqa: E402

CACHE = ROOT / "data"


@pytest.fixture(scope="session")
def cache_dir() -> str:
    """The repository's MNIST cache (made by `make data`; fetched here if missing)."""
    prepare_mnist(CACHE)
    return str(CACHE)


@pytest.fixture
def tiny(tmp_path, cache_dir):
    """Overrides for a few real MNIST steps at a small batch, everything written under tmp_path; quality tracking
    and TensorBoard off (they cost seconds per run; tests/test_watch.py covers them)."""
    def make(**extra):
        base = dict(steps=4, batch_size=8, checkpoint_every=2, sample_every=2, log_every=1, width=8,
                    checkpoint_dir=str(tmp_path / "ck"), sample_dir=str(tmp_path / "samples"),
                    cache_dir=cache_dir, device="cpu", eval_every=0, tensorboard="off")  # on in their own tests
        return {**base, **extra}
    return make
