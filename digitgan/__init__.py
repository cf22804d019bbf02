"""dcgan's library: a DCGAN that learns to draw MNIST digits, with exact resume and honest quality figures.

The Python API (digitgan/api.py, docs/api.md); the command line dcgan.py is a thin layer over it:

    import digitgan
    run = digitgan.train(steps=300, checkpoint_dir="runs/a/ck", sample_dir="runs/a/samples")
    G = digitgan.load(run)
    images = G.sample(16, seed=0)
    scores = digitgan.evaluate(run, num=2000)
"""

from typing import Any

__all__ = ["Generator", "Run", "evaluate", "load", "train"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `import digitgan.config` (all `dcgan.py --help` needs) stays free of torch.
    if name in ("Run", "evaluate", "load", "train"):
        from . import api

        return getattr(api, name)
    if name == "Generator":
        from .nets.drawing import Generator

        return Generator
    raise AttributeError(f"module 'digitgan' has no attribute {name!r}")
