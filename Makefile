# Every target sets up .venv itself (python3 -m venv + pip install from setup.py), then runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_FLAGS ?=
# The fast suite runs as this many pytest processes (pytest-xdist; one test file per process at a time,
# so a file's fixtures are built once): a test keeps about one core busy, and CI has 2.
PYTEST_WORKERS ?= 2

.PHONY: venv demo test test-all bench clean

venv: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, from its CPU build: the timm extra's bare range would otherwise resolve to a CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test,jax,litert,onnx,timm]"
	touch $(STAMP)

# Trains EfficientNetV2 with progressive learning on the bundled digits data, prints results, writes plots.
demo: venv
	$(PY) tools/train.py --hparams=hparams/digits_demo.yaml --model_dir=runs/demo --mode=traineval

# The fast suite (CI): everything not marked slow.
test: venv
	$(PY) -m pytest -m "not slow" -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_FLAGS)

# Everything, including the slow tests (all seven keras.applications parity checks, ...), in one process:
# the multi-worker and timing tests start processes of their own.
test-all: venv
	$(PY) -m pytest $(PYTEST_FLAGS)

bench: venv
	$(PY) tools/benchmark.py

clean:
	rm -rf $(VENV) runs .pytest_cache

# Fashion-MNIST for `data.source: keras:fashion_mnist` (hparams/fashion_mnist_b0.yaml) without a download:
# Debian's dataset-fashion-mnist package (30 MB; Debian 12 main) holds the four idx files that
# keras.datasets.fashion_mnist.load_data() reads from Keras' cache folder ($KERAS_HOME/datasets, default
# ~/.keras/datasets). Without apt, load_data() downloads them there on first use.
KERAS_DATASETS_DIR ?= $(if $(KERAS_HOME),$(KERAS_HOME),$(HOME)/.keras)/datasets
FASHION_MNIST_DEBIAN := /usr/share/datasets/fashion-mnist
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: data
data:
	@if [ ! -d $(FASHION_MNIST_DEBIAN) ] && ! command -v apt-get >/dev/null 2>&1; then \
	  echo "No apt-get here: keras.datasets.fashion_mnist.load_data() downloads Fashion-MNIST into" \
	    "$(KERAS_DATASETS_DIR)/fashion-mnist on first use (network needed), or copy the four *-ubyte.gz files of" \
	    "https://github.com/zalandoresearch/fashion-mnist (data/fashion) there."; \
	elif [ ! -d $(FASHION_MNIST_DEBIAN) ] && ! $(SUDO) apt-get install -y dataset-fashion-mnist; then \
	  echo "apt-get could not install dataset-fashion-mnist: run '$(strip $(SUDO) apt-get update)' and retry" \
	    "(Debian 12 ships it in main)."; \
	  exit 1; \
	else \
	  mkdir -p $(KERAS_DATASETS_DIR)/fashion-mnist && \
	  cp $(FASHION_MNIST_DEBIAN)/*-ubyte.gz $(KERAS_DATASETS_DIR)/fashion-mnist/ && \
	  echo "Fashion-MNIST is in $(KERAS_DATASETS_DIR)/fashion-mnist: data.source keras:fashion_mnist reads it offline."; \
	fi
