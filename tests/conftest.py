import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from digitgan.data import prepare_mnist  # noqa: E402

CACHE = ROOT / "data"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: each on one thread, and so are the processes its tests start
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


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


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory, cache_dir):
    """One short real run for every test that only needs *a* trained run: read it as it is, or change a copy
    (runs.copy_run). 4 steps at width 8, batch 8: checkpoints, grids and quality figures (300 samples) at steps 2
    and 4, best.pt, TensorBoard on."""
    from digitgan.training import train
    d = tmp_path_factory.mktemp("shared")
    run = dict(steps=4, batch_size=8, width=8, checkpoint_every=2, sample_every=2, log_every=1, eval_every=2,
               eval_num=300, tensorboard="on", device="cpu", cache_dir=cache_dir, checkpoint_dir=str(d / "ck"),
               sample_dir=str(d / "samples"))
    train(run)
    return run


@pytest.fixture(scope="session")
def judge(cache_dir):
    """The MNIST evaluator with the test set's features and the real-data reference (read from the cache)."""
    from digitgan.metrics import Judge
    return Judge("mnist", cache_dir)
