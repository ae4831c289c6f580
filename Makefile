# make train  - train the default experiment (the BreastMNIST ResNet-18 study) and print its metrics
# make test   - lint and run the test suite
# Both create .venv and install the project (torch pinned by requirements/constraints.txt) once.
# make label-studio - the Label Studio server the labelling tests run, in its own .venv-label-studio
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=
# Label Studio pins its own Django stack: a separate environment, started as a separate process.
LABEL_STUDIO_VENV ?= .venv-label-studio
LABEL_STUDIO_VERSION ?= 1.23.2
LABEL_STUDIO_STAMP := $(LABEL_STUDIO_VENV)/.installed-$(LABEL_STUDIO_VERSION)

.PHONY: install train test lint benchmark clean label-studio

$(STAMP): pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(LABEL_STUDIO_STAMP):
	$(PYTHON) -m venv $(LABEL_STUDIO_VENV)
	$(LABEL_STUDIO_VENV)/bin/python -m pip install --quiet label-studio==$(LABEL_STUDIO_VERSION)
	touch $(LABEL_STUDIO_STAMP)

label-studio: $(LABEL_STUDIO_STAMP)

train: install
	$(PY) -m breastcls.train $(ARGS)

lint: install
	$(PY) -m ruff check .

test: lint label-studio
	$(PY) -m pytest $(PYTEST_ARGS)

benchmark: install
	$(PY) benchmarks/epoch_overhead.py $(ARGS)

clean:
	rm -rf $(VENV) $(LABEL_STUDIO_VENV) .pytest_cache .ruff_cache
