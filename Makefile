# kubenas — `make demo` runs a search on this machine, `make test` runs the tests.
# Both create .venv on first use: PyTorch first (the CPU build here; the project's
# own `torch>=` range then leaves it alone), then the project with its test extras.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.kubenas-installed

# The Helm chart is checked with helm-sdkpy (the Helm Go library), which needs Python
# >= 3.12: it gets its own venv. Prometheus' promtool and server come from Debian.
HELM_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python) $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python) $(shell command -v python3.12 python3.13 2>/dev/null))
HELM_VENV   := .helm-venv
HELM_STAMP  := $(HELM_VENV)/.kubenas-installed
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test bench crds clean venv tools prometheus

venv: $(STAMP)

# Tools the tests drive for real; tests that need a missing one skip with the reason
# (and fail instead where KUBENAS_REQUIRE_TOOLS=1, as in CI).
tools: $(HELM_STAMP) prometheus

$(HELM_STAMP):
	@if [ -z "$(HELM_PYTHON)" ]; then \
		echo "make: no Python >= 3.12 found (set HELM_PYTHON): the Helm chart tests will skip" >&2; \
	else \
		$(HELM_PYTHON) -m venv $(HELM_VENV) && \
		$(HELM_VENV)/bin/python -m pip install --quiet "helm-sdkpy==0.1.32" "pyyaml>=6" && \
		touch $(HELM_STAMP); \
	fi

prometheus:
	@command -v promtool >/dev/null 2>&1 || { \
		export DEBIAN_FRONTEND=noninteractive; \
		$(SUDO) apt-get install -y -qq prometheus >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq prometheus >/dev/null; } || \
		echo "make: could not install Debian's prometheus: the Prometheus tests will skip" >&2; }

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kubenas search examples/digits.yaml --restart

test: $(STAMP) tools
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/controller_speed.py
	$(BIN)/python benchmarks/nb201_reinforce_vs_random.py
	$(BIN)/python benchmarks/digits_demo.py
	$(BIN)/python benchmarks/operator_scale.py

# Regenerate manifests/crds/ from operator/kubenas/spec.py (tests fail when they are stale).
crds: $(STAMP)
	$(BIN)/python -m kubenas.crds

clean:
	rm -rf $(VENV) $(HELM_VENV) runs
