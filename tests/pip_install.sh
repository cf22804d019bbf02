#!/usr/bin/env bash
# `pip install .` of this checkout into a fresh venv, then the `dcgan` command it installs, run away from the
# checkout (so that the installed package is what runs): --help, 5 steps of training with every default on
# (TensorBoard, quality tracked at the end, best.pt), and the Python API on the run. `make test` runs it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet --disable-pip-version-check "$root"
cd "$tmp"
"$tmp/venv/bin/dcgan" --help | head -1
"$tmp/venv/bin/dcgan" train --steps 5 --cache-dir "$root/data" 2>&1 | grep -v "it/s"
test -f checkpoints/ckpt_0000005.pt && test -f checkpoints/best.json && test -d checkpoints/tensorboard
test -f sample_image/step_0000005.png
"$tmp/venv/bin/python" -c "import digitgan; G = digitgan.load('checkpoints'); print('digitgan.load:', G.step, tuple(G.sample(4).shape))"
# installed, its caches go to the platform's cache folder, not into a data/ of whatever folder it runs in
env -u DCGAN_CACHE XDG_CACHE_HOME="$tmp/xdg" "$tmp/venv/bin/python" -c \
    "from digitgan.config import cache_home; assert cache_home() == '$tmp/xdg/dcgan', cache_home()"
echo "pip-check: ok ($("$tmp/venv/bin/python" -c 'import digitgan; print(digitgan.__file__)'))"
