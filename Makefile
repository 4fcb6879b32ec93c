# Lookout: `make run` starts the whole stack, `make test` runs every check. Both install first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SHARED ?= $(abspath ../shared)
# Model names resolve in ../shared/models when it exists (tests, CI); else in ./models (`lookout models pull`).
LOOKOUT_MODEL_DIR ?= $(if $(wildcard $(SHARED)/models/*.onnx),$(SHARED)/models,$(abspath models))
export LOOKOUT_MODEL_DIR
export LOOKOUT_SHARED_DIR := $(SHARED)
# CPU torch from this machine's disk (no CUDA download); override for a GPU training host.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= cpu,dev,train,lab
# YOLOX model and loss for `lookout train`; --no-deps (see the train extra in pyproject.toml).
YOLOX_SPEC ?= pixeltable-yolox==0.4.3
# docker.io and debootstrap: tests/test_containers.py starts a dockerd and builds the images on a local base.
# iproute2: `lookout lab` (ip netns, tc).
SYSTEM_PACKAGES := chromium redis-server prometheus prometheus-node-exporter influxdb iproute2 docker.io debootstrap
# `make images`: the official Python base by default; BASE_IMAGE (or PYTHON_IMAGE) picks another, e.g. a
# local one where no registry is reachable. DOCKER_BUILD_FLAGS adds flags (--network host, --no-cache).
BASE_IMAGE ?= python:3.11-slim-bookworm
PYTHON_IMAGE ?= $(BASE_IMAGE)
CPU_IMAGE ?= lookout:cpu
GPU_IMAGE ?= lookout:gpu
DOCKER_BUILD_FLAGS ?=
PYTEST_ARGS ?=

.PHONY: help install system-deps run test lint typecheck pytest bench images image-cpu image-gpu clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: system-deps $(VENV)/.installed ## set up .venv and the system packages (idempotent)

system-deps: ## install the Debian packages the tests need (chromium, redis, prometheus, influxdb, docker)
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e '.[$(EXTRAS)]'
	case ',$(EXTRAS),' in *,train,*) $(PIP) install -q --no-deps $(YOLOX_SPEC);; esac
	touch $@

run: install ## start Redis, signaling on :8080, one bridge and the workers; Ctrl-C stops all
	$(VENV)/bin/lookout up

test: install lint typecheck pytest ## ruff, mypy and the whole pytest suite

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy wire runtime inference signaling mediabridge training lookout bench tests

pytest:
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: install ## every benchmark in bench/, each reported as a ratio to raw ONNX Runtime
	$(PY) -m bench

images: image-cpu image-gpu ## build lookout:cpu and lookout:gpu (BASE_IMAGE=... for another base)

image-cpu:
	docker build $(DOCKER_BUILD_FLAGS) --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) -f compose/Dockerfile -t $(CPU_IMAGE) .

image-gpu:
	docker build $(DOCKER_BUILD_FLAGS) --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) -f compose/Dockerfile.gpu -t $(GPU_IMAGE) .

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache test-output *.egg-info
