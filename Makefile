# The two commands a newcomer needs are `make demo` and `make test`; both set themselves up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Re-install only when the dependency list changes, so a second `make test` is quick.
STAMP := $(VENV)/.installed-stamp

.PHONY: install test lint fmt clean demo crds bench

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,dev]'
	touch $(STAMP)

demo: install
	cd examples/ticket-router && ../../$(PY) demo.py

test: install
	$(PY) -m pytest

# The AsyncActor CRD (crds/ and the copy in charts/asya-operator/crds/) is generated from
# asya_operator/models.py; a test fails when either is stale.
crds: install
	$(PY) -m asya_operator.crd

# Asya against a bare forwarder on the same broker (RabbitMQ unless told otherwise, e.g.
# `make bench BENCH_ARGS="--transport local"`); the summary goes to bench/results/<transport>.json.
bench: install
	$(PY) -m bench $(BENCH_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

fmt: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
