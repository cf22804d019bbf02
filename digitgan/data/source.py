"""What a kind of data is: a Source (its name, its pictures' shape and classes, its splits, the shipped evaluator
that reads it, how it is fetched and cached). The sources themselves are mnist.py, stacked.py, emoji.py and
folder.py, found by name in sources.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .dataset import Dataset
from .shape import Shape


@dataclass(frozen=True)
class Request:
    """What a command asks of a source: the side and channels (0: the data's own), where caches go, the user's own
    files of it (data_dir: MNIST's IDX files), and how many processes may freeze pictures (0: one per core)."""

    resolution: int
    channels: int
    cache_dir: str
    data_dir: str = ""
    workers: int = 0


class Source:
    """A kind of data that --dataset names. Each source says what its pictures are before they are loaded where it
    can (known_shape), loads a split at the resolution and channels asked for (load), and names what quality is
    measured on: its own test set, or a seeded hold-out kept out of training (test_set)."""

    name: str  # what --dataset takes
    title: str  # how messages name it: "MNIST"
    test_set = "held-out images"  # the real images quality figures compare with
    evaluator_shape: Shape | None = None  # the shape the shipped evaluator quality/evaluators/NAME reads, if any
    augment = "off"  # what --augment auto means for it
    max_resolution = 256  # the largest --resolution it is trained at (its pictures' own size, scaled up no further)
    resolution_note = ""  # where a larger side could come from, for the refusal

    def check_resolution(self, resolution: int) -> None:
        """Refuse a resolution past what this data holds, in one line saying what to pass."""
        if resolution > self.max_resolution:
            raise UsageError(
                f"--resolution {resolution}: {self.title}, at most {self.max_resolution} pixels{self.resolution_note}; "
                f"pass --resolution {self.max_resolution} or less"
            )

    def load(self, split: str, resolution: int, channels: int, cache_dir: str, data_dir: str = "") -> Dataset:
        """One split ("train" or "test") as a Dataset, at the resolution, with the channels asked for (0: the data's
        own)."""
        raise NotImplementedError

    def sizes(self, asked: Request, say: Callable[[str], None]) -> tuple[int, int, tuple[str, ...]]:
        """(usable images, of them to train on, class names), for the checks before a run writes anything."""
        train = self.load("train", asked.resolution, asked.channels, asked.cache_dir, asked.data_dir)
        return len(train) + train.held_out, len(train), train.shape.classes

    def prepare(self, asked: Request, say: Callable[[str], None]) -> None:
        """What `dcgan data` does before the quality figures' real images are embedded: fetch, check, freeze and
        cache the pictures, saying what was done."""
        train = self.load("train", asked.resolution, asked.channels, asked.cache_dir, asked.data_dir)
        say(
            f"{self.name}: {len(train)} images to train on and {train.held_out} held out, {train.shape.describe()}, "
            f"fingerprint {train.fingerprint}"
        )

    def known_shape(self, resolution: int, channels: int) -> Shape | None:
        """The data's shape without loading it, where the source knows it."""
        return None

    def tag(self, resolution: int, channels: int, data: Dataset | None) -> str:
        """What names the data in cache files made from it (the real images' features, CAS's real classifier):
        here the data's fingerprint, so the data must be given."""
        if data is None:
            raise ValueError(f"the tag of {self.name} is its data's fingerprint: pass the data")
        return f"{Path(self.name).name}-{data.fingerprint}"

    @property
    def evaluator(self) -> str | None:
        """The shipped evaluator's name (quality/evaluators/NAME.safetensors), or None."""
        return self.name if self.evaluator_shape else None

    def evaluator_reads(self, shape: Shape) -> bool:
        """Whether the shipped evaluator can read pictures of this shape."""
        fit = self.evaluator_shape
        return fit is not None and (shape.resolution, shape.channels) == (fit.resolution, fit.channels)
