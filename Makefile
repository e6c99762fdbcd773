# Glimpse: `make demo` and `make test` work from a clean clone (they depend on `install`).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# Debian packages: offline datasets (Tux Paint photos, Fashion-MNIST) and the browser for the page test.
APT_PACKAGES := tuxpaint-stamps-default dataset-fashion-mnist chromium
APT_CHECK := /usr/share/tuxpaint/stamps/animals /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz /usr/bin/chromium
PYTEST_ARGS ?= --durations=25
# The suite in parallel, one worker per CPU (at most 4): alone it keeps about one core of two busy (user time about
# equal to wall time), its servers and trainings waiting on each other. Whole files go to one worker, so that a
# module's trained model or started server is built once; tests marked serial run afterwards in one process.
XDIST_ARGS ?= -n auto --maxprocesses 4 --dist loadfile

.PHONY: install apt-data demo stop test test-fast bench lint protos clean

install: $(STAMP) apt-data

$(STAMP): pyproject.toml
	@echo "Installing Python packages into $(VENV) (pyproject.toml; README.md says why each is there)."
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

apt-data:
	@missing=0; for f in $(APT_CHECK); do [ -e $$f ] || missing=1; done; \
	if [ $$missing = 0 ]; then exit 0; fi; \
	echo "Installing Debian packages (once): tuxpaint-stamps-default (offline photos for training and the demo)," \
	     "dataset-fashion-mnist (the Fashion-MNIST dataset), chromium (headless browser for the web page test)."; \
	if [ "$$(id -u)" = 0 ]; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null \
	  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; }; \
	else \
	  echo "Glimpse needs Debian packages for its offline data; run:"; \
	  echo "  sudo apt-get install --no-install-recommends $(APT_PACKAGES)"; \
	fi

demo: install
	$(VENV)/bin/python scripts/demo.py

stop:
	@if [ -f out/stack.pid ]; then kill -TERM -- -$$(cat out/stack.pid) 2>/dev/null || true; rm -f out/stack.pid; echo stopped; fi

test: install
	$(VENV)/bin/lint-imports --no-logo
	$(PY) -m pytest -m "not serial" $(XDIST_ARGS) $(PYTEST_ARGS)
	$(PY) -m pytest -m serial $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow and not serial" $(XDIST_ARGS) $(PYTEST_ARGS)
	$(PY) -m pytest -m "serial and not slow" $(PYTEST_ARGS) || [ $$? = 5 ]  # 5: no such test today

# The explain API against its own OpenAPI document, long: >= 5,000 generated requests, no 5xx, no schema violation.
.PHONY: fuzz-api
fuzz-api: install
	GLIMPSE_FUZZ_EXAMPLES=$${GLIMPSE_FUZZ_EXAMPLES:-500} $(PY) -m pytest tests/explain_api/test_openapi.py \
	  -k test_app_conforms_to_its_openapi -q -s -p no:cacheprovider $(PYTEST_ARGS)

bench: install
	$(VENV)/bin/glimpse bench --out docs/benchmarks.md

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-logo

protos: install
	$(PY) -m glimpse_wire._regen
	$(PY) -m serving._regen

clean:
	rm -rf $(VENV) out .pytest_cache
