# make train: set up everything, then train (or resume).   make test: set up everything, then run the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FASHION := /usr/share/datasets/fashion-mnist

.PHONY: train test venv data fashion-mnist site browser bench clean-venv

train: venv data site
	$(PY) dcgan.py train

test: venv data fashion-mnist site browser
	$(PY) -m pytest -q tests

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

data: venv
	$(PY) dcgan.py data

# The tests read the real Fashion-MNIST files from Debian's package; install it when we may.
fashion-mnist:
	@if [ ! -d $(FASHION) ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	    sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	  else echo "note: $(FASHION) is missing and apt-get needs root: the Fashion-MNIST tests will be skipped"; fi; \
	fi

# The exported page's runtime (onnxruntime-web, pinned in web/package-lock.json); `dcgan.py export` copies it.
site: web/node_modules/.installed

web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The browser test drives Debian's chromium through chromedriver; install them when we may.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	    sudo apt-get update -qq && sudo apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "note: chromium and chromium-driver are missing and apt-get needs root: the browser test will be skipped"; fi; \
	fi

bench: venv data
	$(PY) bench/throughput.py --compare
	$(PY) bench/sampling.py

clean-venv:
	rm -rf $(VENV)
