# The two commands a newcomer needs are `make demo` and `make test`; both set themselves up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Re-install only when the dependency list changes, so a second `make test` is quick.
STAMP := $(VENV)/.installed-stamp
# Real model servers for the callers' tests and `make demo-llm`, each in its own venv.
LLAMA_VENV ?= .venv-llama
MLSERVER_VENV ?= .venv-mlserver

.PHONY: install test lint fmt clean demo demo-llm crds bench faults model-servers browser

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,dev]'
	touch $(STAMP)

demo: install
	cd examples/ticket-router && ../../$(PY) demo.py

# The LLM pipeline of examples/llm-review, on Gemma 3 270M served by llama.cpp.
demo-llm: install $(LLAMA_VENV)/.installed-stamp
	$(PY) examples/llm-review/demo.py

model-servers: $(LLAMA_VENV)/.installed-stamp $(MLSERVER_VENV)/.installed-stamp

# llama.cpp built for the machine it is built on (GGML_NATIVE) uses the CPU's AMX tiles where
# it has them, and its AMX matrix multiply crashes the server (SIGSEGV in
# ggml_backend_amx_mul_mat, seen with llama-cpp-python 0.3.36): build for AVX2 instead. The
# venv is made anew and pip's cache is not used, or pip would reuse a wheel built earlier
# with other flags.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

$(LLAMA_VENV)/.installed-stamp: requirements/llama-server.txt
	$(PYTHON) -m venv --clear $(LLAMA_VENV)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(LLAMA_VENV)/bin/python -m pip install --quiet --no-cache-dir \
	  -r requirements/llama-server.txt
	touch $@

$(MLSERVER_VENV)/.installed-stamp: requirements/mlserver.txt
	test -x $(MLSERVER_VENV)/bin/python || $(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/python -m pip install --quiet -r requirements/mlserver.txt
	touch $@

# Debian's Chromium and its driver, for the browser test of the gateway's web view
# (tests/gateway/test_ui_browser.py); installed only when either is missing.
browser:
	test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: install model-servers browser
	$(PY) -m pytest

# The AsyncActor CRD (crds/ and the copy in charts/asya-operator/crds/) is generated from
# asya_operator/models.py; a test fails when either is stale.
crds: install
	$(PY) -m asya_operator.crd

# Asya against a bare forwarder on the same broker (RabbitMQ unless told otherwise, e.g.
# `make bench BENCH_ARGS="--transport local"`); the summary goes to bench/results/<transport>.json.
bench: install
	$(PY) -m bench $(BENCH_ARGS)

# Fault injection (docs/reliability.md): every scenario on every broker, one JSON line each;
# e.g. `make faults FAULTS_ARGS="--transport rabbitmq --profile long"`.
faults: install
	$(PY) -m faults $(FAULTS_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

fmt: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(LLAMA_VENV) $(MLSERVER_VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
