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
