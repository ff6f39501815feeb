# One place for setting up, running and testing. `make run` and `make test` are the two commands
# a new machine needs; both set up everything first (virtualenv, packages, model assembly).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export VOICE_AGENT_CACHE ?= $(HOME)/.cache/voice-agent
LLAMA_CPP_VERSION := 0.3.36
# llama.cpp's CPU code for this machine (-march=native: with AVX-512 a prompt evaluates 1.55x
# faster than with AVX2 alone here) but without AMX: on CPUs with AMX (Sapphire Rapids and
# later) a native build segfaults in ggml_backend_amx_mul_mat on the first answer
# (llama.cpp#20824). The wheel is cached per CPU (a hash of its flags), so a cache carried to
# another machine is rebuilt there, never run. The image runs where it was not built: the
# Dockerfile builds for any x86-64 with AVX2.
ifeq ($(shell uname -m),x86_64)
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=ON "-DCMAKE_C_FLAGS=$(NO_AMX)" "-DCMAKE_CXX_FLAGS=$(NO_AMX)"
else
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=ON
endif
CPU_KEY := $(shell grep -m1 -E '^(flags|Features)' /proc/cpuinfo | md5sum | cut -c1-10)
WHEELS := $(VOICE_AGENT_CACHE)/wheels-$(shell uname -m)-$(CPU_KEY)
SILERO_VAD_VERSION := 6.2.3
# ships Smart Turn v3.2 (the turn-completion model); only its ONNX file is used
PIPECAT_VERSION := 1.14.0
# Debian tools the tests use: a throwaway PostgreSQL checks the campaign store, npm installs
# `buf curl` (the reflection test) and builds the web page, Chromium runs the page's tests,
# baresip and SIPp (sip-tester) call the SIP bridge.
# what-proves-it-is-there:package, a command on PATH or a file glob; present ones are not reinstalled.
SYSTEM_DEPS := npm:npm /usr/lib/postgresql/*/bin/initdb:postgresql chromium:chromium baresip:baresip sipp:sip-tester

.PHONY: help setup run test unit lint protos web bench system-deps clean image-test

help:
	@echo "make run    set up everything and start the server (offline stack, gRPC on \$$PORT or 50051)"
	@echo "make test   set up everything and run lint, type checks and the whole test suite"
	@echo "make unit   the fast tests alone (tests/unit: no models, no peers; a few minutes)"
	@echo "make protos regenerate the Python stubs and the TypeScript client from protos/"
	@echo "make web    build the web page (clients/web -> clients/web/dist, served on \$$HTTP_PORT)"
	@echo "make bench  run the voice-to-voice benchmark and update BENCHMARKS.md"
	@echo "make image-test  build the Dockerfile with Podman and run the image (deploy/test-image.sh)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# llama-cpp-python ships only as source (~5 min to build on 2 cores): build the wheel once into
# the cache, outside the checkout, so later setups and CI runs on this machine reuse it.
$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml sip_bridge/pyproject.toml Makefile | $(BIN)/python
	@mkdir -p $(WHEELS)
	@if ! ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
		echo "building llama-cpp-python $(LLAMA_CPP_VERSION) once (about 5 minutes)..."; \
		CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
			$(BIN)/pip wheel -q --no-deps --no-cache-dir \
			llama-cpp-python==$(LLAMA_CPP_VERSION) -w $(WHEELS); \
	fi
	@# The client SDK (clients/python, `voiceagent`) is its own distribution; the server needs it.
	$(BIN)/pip install -q --find-links $(WHEELS) -e ./clients/python -e '.[dev]'
	@# silero-vad's own dependencies pull in torch; we only need the ONNX file it ships.
	$(BIN)/pip install -q --no-deps silero-vad==$(SILERO_VAD_VERSION)
	@# pipecat-ai ships the Smart Turn ONNX file; its dependencies are not needed (never imported).
	$(BIN)/pip install -q --no-deps pipecat-ai==$(PIPECAT_VERSION)
	@# The SIP bridge is its own package (PJSIP is GPL-2.0): same venv, separate distribution.
	$(BIN)/pip install -q -e ./clients/python -e ./sip_bridge
	@touch $@

setup: $(VENV)/.installed
	$(BIN)/voice-agent models

run: setup web
	$(BIN)/voice-agent serve

system-deps:
	@missing=""; for dep in $(SYSTEM_DEPS); do \
		what="$${dep%%:*}"; \
		{ command -v "$$what" || compgen -G "$$what"; } >/dev/null 2>&1 || missing="$$missing $${dep##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

BUF_DIR := tests/integration/buf
$(BUF_DIR)/node_modules/.installed: $(BUF_DIR)/package-lock.json
	npm ci --prefix $(BUF_DIR) --no-audit --no-fund
	@touch $@

# The web page: npm packages from the committed lockfile, bundled by esbuild into dist/ (neither
# is committed). `make run` needs only npm of the system packages.
WEB_DIR := clients/web
$(WEB_DIR)/node_modules/.installed: $(WEB_DIR)/package-lock.json
	@$(MAKE) --no-print-directory system-deps SYSTEM_DEPS=npm:npm
	npm ci --prefix $(WEB_DIR) --no-audit --no-fund
	@touch $@

web: $(WEB_DIR)/node_modules/.installed
	npm run --prefix $(WEB_DIR) --silent build

test: setup system-deps lint $(BUF_DIR)/node_modules/.installed web
	$(BIN)/pytest -ra tests

# The web client's test compares the committed TypeScript stubs with a fresh `buf generate`: it
# needs the page's npm packages too.
unit: $(VENV)/.installed $(WEB_DIR)/node_modules/.installed
	$(BIN)/pytest -q tests/unit

protos: $(VENV)/.installed $(WEB_DIR)/node_modules/.installed
	$(BIN)/python clients/python/gen_stubs.py
	npm run --prefix $(WEB_DIR) --silent generate

bench: setup system-deps
	$(BIN)/python bench/voice_to_voice.py --write

# Builds the container image from Debian packages with Podman and runs it as a platform would
# (~15 minutes from nothing on 2 cores, ~3 minutes with the base images and layers cached).
image-test: setup
	bash deploy/test-image.sh

clean:
	rm -rf $(VENV) build *.egg-info clients/python/*.egg-info sip_bridge/*.egg-info .pytest_cache .mypy_cache .ruff_cache $(WEB_DIR)/node_modules $(WEB_DIR)/dist
