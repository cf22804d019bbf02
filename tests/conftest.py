import fcntl
import os
import sys
import tarfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from digitgan.config import cache_home  # noqa: E402
from digitgan.data.mnist import prepare_mnist  # noqa: E402

CACHE = Path(cache_home())  # the checkout's data/ (as make's set-up fills it), or $DCGAN_CACHE where set

# glibc maps every large block afresh and unmaps it when freed, so each big tensor costs page faults on zeroed
# pages (a fifth of the suite's CPU time went to the kernel). Keeping freed memory for reuse cuts that: this reaches
# pytest-xdist's workers, which start after this file is read, and every process the tests start.
os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(2**32))
os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(2**32))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: each on one thread, and so are the processes its tests start
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_runtest_setup(item):
    """A test marked needs(available, what, how) needs a real part of the machine (a Debian package, real photos):
    under `make test` (DCGAN_FULL_SUITE set) its absence fails the test, for a suite that passes has run it; on a
    partial machine (a developer's, the GPU machine) the test is skipped, saying how to get the part."""
    for mark in item.iter_markers("needs"):
        available, what, how = mark.args
        if not available:
            (pytest.fail if os.environ.get("DCGAN_FULL_SUITE") else pytest.skip)(f"{what} is missing: {how}")


def pytest_collection_modifyitems(items):
    """The tests marked `heavy` (half a minute of CPU or more, or torchrun's processes) first, in the order of their
    marks' numbers: pytest-xdist's workers (one test at a time each: make test) then share out the light ones at the
    end, instead of one worker finishing a heavy test alone."""
    def order(item):
        mark = item.get_closest_marker("heavy")
        return mark.args[0] if mark else 99
    items.sort(key=order)


@pytest.fixture(scope="session", autouse=True)
def own_temp(tmp_path_factory):
    """The temporary files of the processes the tests start (a folder per torchrun launch, chromium's profiles)
    go under pytest's own temporary folder, which pytest clears after a few sessions, not into /tmp for good."""
    d = tmp_path_factory.getbasetemp() / "tmp"
    d.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(d))
        yield


@pytest.fixture(scope="session")
def cache_dir() -> str:
    """The repository's data cache: MNIST (made by `make data`; fetched here if missing) and the MNIST evaluator's
    test-set features and real-data reference, which most tests that evaluate need. When they are missing, one
    worker makes them on every core while the others wait for it, instead of each making its own."""
    CACHE.mkdir(exist_ok=True)
    with open(CACHE / ".tests.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        prepare_mnist(CACHE)
        threads = torch.get_num_threads()
        torch.set_num_threads(os.cpu_count() or 1)
        try:
            from digitgan.quality.judge import Judge
            Judge("mnist", str(CACHE))
        finally:
            torch.set_num_threads(threads)
    return str(CACHE)


@pytest.fixture
def tiny(tmp_path, cache_dir):
    """Overrides for a few real MNIST steps at a small batch, everything written under tmp_path; quality tracking
    and TensorBoard off (they cost seconds per run; tests/test_watch.py covers them)."""
    def make(**extra):
        # lr_decay 0: the rate is a function of --steps, so only a constant one lets a run stopped by a smaller
        # --steps and continued by a larger equal a straight run (tests of the decay pass it)
        base = dict(steps=4, batch_size=8, checkpoint_every=2, sample_every=2, log_every=1, width=8, lr_decay=0.0,
                    checkpoint_dir=str(tmp_path / "ck"), sample_dir=str(tmp_path / "samples"),
                    cache_dir=cache_dir, device="cpu", eval_every=0, tensorboard="off")  # on in their own tests
        return {**base, **extra}
    return make


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory, cache_dir):
    """One short real run for every test that only needs *a* trained run: read it as it is, or change a copy
    (runs.copy_run). 4 steps at width 8, batch 8: checkpoints, grids and quality figures (300 samples) at steps 2
    and 4, best.pt, TensorBoard on."""
    from digitgan.training.loop import train
    from runs import once

    def make(d):
        train({**run(d), "checkpoint_dir": str(d / "ck"), "sample_dir": str(d / "samples")})

    def run(d):
        return dict(steps=4, batch_size=8, width=8, checkpoint_every=2, sample_every=2, log_every=1, eval_every=2,
                    eval_num=300, tensorboard="on", device="cpu", cache_dir=cache_dir, checkpoint_dir=str(d / "ck"),
                    sample_dir=str(d / "samples"))
    return run(once(tmp_path_factory, "shared_run", make))


@pytest.fixture(scope="session")
def exported(tmp_path_factory, cache_dir, shared_run):
    """Each kind of runs.EXPORT_KINDS trained a few real steps (the dcgan kind: the suite's shared run), then
    exported, each once for the session when a test first asks for it (so two workers build two kinds at once
    rather than one waiting for all): {kind: (checkpoint dir, export dir)}."""
    import dcgan
    from digitgan.training.loop import train
    from runs import EXPORT_KINDS, once

    class Exported(dict):
        def __missing__(self, kind):
            def ck(d):
                return Path(shared_run["checkpoint_dir"]) if kind == "dcgan" else d / "ck"

            def make(d):
                if EXPORT_KINDS[kind]:
                    train({**dict(steps=4, batch_size=8, width=8, sample_every=2, checkpoint_every=2, log_every=1,
                                  eval_every=0, tensorboard="off", device="cpu", cache_dir=cache_dir,
                                  checkpoint_dir=str(ck(d)), sample_dir=str(d / "samples")), **EXPORT_KINDS[kind]})
                assert dcgan.main(["export", "--checkpoint-dir", str(ck(d)), "--out", str(d / "site")]) == 0
            d = once(tmp_path_factory, f"exported-{kind}", make)
            self[kind] = (ck(d), d / "site")
            return self[kind]
    return Exported()


@pytest.fixture(scope="session")
def judge(cache_dir):
    """The MNIST evaluator with the test set's features and the real-data reference (read from the cache)."""
    from digitgan.quality.judge import Judge
    return Judge("mnist", cache_dir)


@pytest.fixture(scope="module")
def emoji_files(cache_dir):
    """Real emoji PNGs by category, straight from the package (name -> bytes)."""
    from digitgan.data.emoji import EMOJI_PACKAGE, emoji_items

    with tarfile.open(Path(cache_dir) / EMOJI_PACKAGE.file) as tar:
        items, classes = emoji_items(tar)
        return {classes[label]: [(Path(name).name, read()) for name, read, lab in items if lab == label][:12]
                for label in range(len(classes))}
