# qwen-image-edit: `make run` serves it, `make test` proves it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_MODEL := models/tiny-qwen-image-edit/model_index.json

.PHONY: run test lint typecheck unit integration venv dev-model system-deps clean

run: $(STAMP) $(DEV_MODEL)
	$(PY) scripts/run_stack.py

test: $(STAMP) $(DEV_MODEL) system-deps lint typecheck
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy qie_engine gateway qie_client scripts benchmarks

unit: $(STAMP) $(DEV_MODEL)
	$(PY) -m pytest -m "not integration"

integration: $(STAMP) $(DEV_MODEL) system-deps
	$(PY) -m pytest -m integration

venv: $(STAMP)

# Heavy installs (torch) happen once per .venv; the stamp is redone only when pyproject changes.
# nvidia-pytriton is used only for the tritonserver binary it ships, so its Python deps are skipped.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[engine,gateway,client,dev]'
	$(PY) -m pip install --quiet --no-deps nvidia-pytriton==0.7.0
	touch $(STAMP)

dev-model: $(DEV_MODEL)

$(DEV_MODEL): $(STAMP) qie_engine/tiny_model.py
	$(PY) scripts/build_dev_model.py --force

# Debian packages the tests use: a Redis server of their own, promtool for the alert rules, and
# Chromium for the playground's browser tests (Playwright drives it; it downloads no browser).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

clean:
	rm -rf .triton models .pytest_cache .mypy_cache .ruff_cache
