"""The package's folders are its stages, and its imports run down them only: config and errors, core, data, nets,
quality, training, share, then the API. Only the data stage knows datasets by name."""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from import_map import floors, imports  # noqa: E402

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
