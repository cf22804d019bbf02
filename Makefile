# make train: set up everything, then train (or resume).   make test: set up everything, then run the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FASHION := /usr/share/datasets/fashion-mnist
# Downloads and caches: in a checkout its data/, whatever starts the program (make, python dcgan.py, the API), or
# $DCGAN_CACHE where set; an installed dcgan keeps them in ~/.cache/dcgan (docs/data.md)
CACHE := $(or $(DCGAN_CACHE),data)
# pytest's workers: one per core, each torch on one thread (tests/conftest.py)
JOBS ?= $(shell nproc)

.PHONY: train test lint venv data cas-real fashion-mnist stacked-mnist emoji photos page browser flags pip-check bench clean-venv

train: venv data
	$(PY) dcgan.py train

test: venv data cas-real fashion-mnist stacked-mnist emoji photos page browser lint
	DCGAN_FULL_SUITE=1 $(PY) -m pytest -q -n $(JOBS) --dist load --maxschedchunk 1 tests
	$(MAKE) --no-print-directory pip-check

# ruff's lint and format check, and mypy's types, over the package and dcgan.py (settings: pyproject.toml)
lint: venv
	$(PY) -m ruff check digitgan dcgan.py
	$(PY) -m ruff format --check digitgan dcgan.py
	$(PY) -m mypy

venv: $(VENV)/.installed

# The pins (requirements.txt, as pyproject.toml has them), then the project itself for the `dcgan` command.
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

data: venv
	$(PY) dcgan.py data

# The Classification Accuracy Score's real-data side at the size the suite's CAS test asks for (1,000 MNIST images):
# a classifier trained once into the cache (deterministic on the CPU), as `make data` embeds the test set once.
cas-real: data
	$(PY) -c "from digitgan.config import resolve; from digitgan.quality.judge import real_data_cas as cas; \
	  print('CAS of 1,000 real MNIST images: %.4f' % cas(resolve({'cache_dir': '$(CACHE)'}), 1000)[0])"

# Shell: apt-get install the Debian packages $(1) as root or through sudo; otherwise a note that $(2) missing
# and $(3) will fail.
apt_install = if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $(1) >/dev/null; \
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
    sudo apt-get update -qq && sudo apt-get install -y -qq $(1) >/dev/null; \
  else echo "note: $(2) missing and apt-get needs root: $(3) will fail"; fi

# The tests read the real Fashion-MNIST files from Debian's package; install it when we may, and cache its
# evaluator's test-set features (as `make data` does MNIST's).
fashion-mnist: venv
	@if [ ! -d $(FASHION) ]; then \
	  $(call apt_install,dataset-fashion-mnist,$(FASHION) is,the Fashion-MNIST tests); \
	fi
	@if [ -d $(FASHION) ]; then $(PY) dcgan.py data --dataset fashion-mnist; fi

# Stacked MNIST's test set and real-data reference in the MNIST evaluator's features, three channels each (once,
# on every core, before the suite's workers need them).
stacked-mnist: data
	$(PY) dcgan.py data --dataset stacked-mnist

# The colour tests train on the emoji of npm's emoji-datasource-google (fetched with npm pack, checksummed, frozen
# into the cache at 32 and 64 pixels), and at 128 on the same emoji drawn by Debian's fonts-noto-color-emoji (its
# .deb fetched with apt-get download, as dcgan.py would fetch it, checksummed, never installed).
EMOJI_FONT := fonts-noto-color-emoji=2.042-0+deb12u1
emoji: venv
	$(PY) dcgan.py data --dataset emoji --resolution 32
	$(PY) dcgan.py data --dataset emoji --resolution 64
	@if [ ! -f $(CACHE)/fonts-noto-color-emoji_2.042-0+deb12u1_all.deb ]; then \
	  mkdir -p $(CACHE) && (cd $(CACHE) && apt-get download -qq $(EMOJI_FONT) 2>/dev/null) || \
	  { $(call apt_install,,the package lists are,the 128-pixel emoji tests); cd $(CACHE) && apt-get download -qq $(EMOJI_FONT); } || \
	  echo "note: could not fetch $(EMOJI_FONT): make test's 128-pixel emoji tests will fail"; \
	fi
	$(PY) dcgan.py data --dataset emoji --resolution 128
	@# the suite also asks for them as RGB at every side: frozen here, not in a test
	for side in 32 64 128; do $(PY) dcgan.py data --dataset emoji --resolution $$side --channels 3 || exit 1; done

# The ImageNet feature space's test names real photos: the samples in Debian's python3-skimage, read from its .deb
# (fetched, not installed; tests/photos.py checks its SHA-256).
SKIMAGE := python3-skimage=0.19.3-8
photos:
	@if [ ! -f $(CACHE)/python3-skimage_0.19.3-8_all.deb ]; then \
	  mkdir -p $(CACHE) && (cd $(CACHE) && apt-get download -qq $(SKIMAGE) 2>/dev/null) || \
	  { $(call apt_install,,the package lists are,the photo test); cd $(CACHE) && apt-get download -qq $(SKIMAGE); } || \
	  echo "note: could not fetch $(SKIMAGE): make test's photo test will fail"; \
	fi

# The exported page's runtime: onnxruntime-web's package (npm pack, checksummed) in the cache. `dcgan.py export` fetches
# it when it first needs it; make test fetches it before the suite, which exports.
page: venv
	$(PY) -c "from digitgan.share.export import runtime_files; runtime_files('$(CACHE)')"

# The browser test drives Debian's chromium through chromedriver; install them when we may.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  $(call apt_install,chromium chromium-driver,chromium and chromium-driver are,the browser test); \
	fi

# docs/flags.md from TrainConfig and the subcommands' parsers (tests/test_docs.py fails when it is stale).
flags: venv
	$(PY) -c "import dcgan; print(dcgan.flags_markdown(), end='')" > docs/flags.md

# `pip install .` into a fresh venv, then its `dcgan` command: --help, and 5 steps with every default on.
pip-check: venv data
	bash tests/pip_install.sh

bench: venv data
	$(PY) bench/throughput.py --compare
	$(PY) bench/sampling.py

clean-venv:
	rm -rf $(VENV)
