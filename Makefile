# make train  - train the default experiment (the BreastMNIST ResNet-18 study) and print its metrics
# make test   - lint and run the test suite
# Both create .venv and install the project (torch pinned by requirements/constraints.txt) once.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install train test lint benchmark clean

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

train: install
	$(PY) -m breastcls.train $(ARGS)

lint: install
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

benchmark: install
	$(PY) benchmarks/epoch_overhead.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
