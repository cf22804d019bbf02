"""One source of truth for the pins: requirements.txt (what `make venv` installs) and pyproject.toml (what
`pip install .` installs) name the same packages at the same versions.
`make test` also installs the project into a fresh venv and runs its `dcgan` command (tests/pip_install.sh)."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups()
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_requirements_and_pyproject_pin_the_same_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, test = _pins(project["dependencies"]), _pins(project["optional-dependencies"]["test"])
    assert not runtime.keys() & test.keys()
    assert _pins((ROOT / "requirements.txt").read_text().splitlines()) == {**runtime, **test}
    # what the defaults need is in the runtime set: TensorBoard (on by default) and the ONNX exporter
    assert {"torch", "tensorboard", "onnx", "onnxscript", "safetensors"} <= runtime.keys()
    assert project["scripts"]["dcgan"] == "dcgan:main"


def _name(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _imports(paths) -> set[str]:
    """The top-level modules that Python files (or a notebook's code cells) import."""
    import ast
    import json

    names = set()
    for path in paths:
        text = path.read_text()
        if path.suffix == ".ipynb":
            cells = json.loads(text)["cells"]
            text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "importorskip"
                  and isinstance(node.args[0], ast.Constant)):
                names.add(node.args[0].value.split(".")[0])
    return names


def _required_by(dists) -> set[str]:
    """What the installed distributions need (their extras' needs included where another asks for them)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    needed, extras = set(), {}
    for dist in dists:
        for text in metadata.requires(dist) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                needed.add(_name(req.name))
                extras.setdefault(_name(req.name), set()).update(req.extras)
    for dist, wanted in extras.items():
        for text in metadata.requires(dist) or [] if wanted and dist in map(_name, dists) else []:
            req = Requirement(text)
            if req.marker is not None and any(req.marker.evaluate({"extra": e}) for e in wanted):
                needed.add(_name(req.name))
    return needed


# Pins used without an import of their own, and where that use is written down
THROUGH = {
    "onnxscript": ("digitgan/share/export.py", "dynamo=True"),  # torch.onnx's exporter imports it
    "pytest-xdist": ("Makefile", "-n $(JOBS)"),  # pytest's workers
    "ruff": ("Makefile", "-m ruff"),
    "mypy": ("Makefile", "-m mypy"),
    "pytest": ("Makefile", "-m pytest"),
    "ipykernel": ("tests/test_notebook.py", "python3"),  # the kernel nbclient runs the notebook in
}


def test_every_pin_is_imported_or_needed_by_another():
    """A pin nothing uses is dead weight in every install: each runtime pin is imported by the package (or needed by
    another runtime pin), each test pin by the tests, the benchmarks or the notebook (or needed by another pin, or
    run by make)."""
    from importlib import metadata

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, test = _pins(project["dependencies"]), _pins(project["optional-dependencies"]["test"])
    of_module = metadata.packages_distributions()
    def dists(modules):
        return {_name(d) for m in modules for d in of_module.get(m, [])}
    package = dists(_imports([ROOT / "dcgan.py", *(ROOT / "digitgan").rglob("*.py")]))
    around = dists(_imports([*(ROOT / "tests").glob("*.py"), *(ROOT / "bench").glob("*.py"),
                             *(ROOT / "notebooks").glob("*.ipynb")]))
    names = {_name(p) for p in [*runtime, *test]}
    through = {name for name, (path, text) in THROUGH.items() if text in (ROOT / path).read_text()}
    for name in map(_name, runtime):
        others = [d for d in runtime if _name(d) != name]
        assert name in package | through or name in _required_by(others), f"{name}: a runtime pin nothing uses"
    for name in map(_name, test):
        others = [d for d in [*runtime, *test] if _name(d) != name]
        assert name in around | through or name in _required_by(others), f"{name}: a test pin nothing uses"
    assert "matplotlib" not in package  # the program draws its charts with Pillow (core/charts.py)
    assert names  # the pins were read
