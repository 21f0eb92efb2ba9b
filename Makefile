# kubenas — `make demo` runs a search on this machine, `make test` runs the tests.
# Both create .venv on first use: PyTorch first (the CPU build here; the project's
# own `torch>=` range then leaves it alone), then the project with its test extras.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.kubenas-installed

SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test bench crds clean venv tools prometheus

venv: $(STAMP)

# Tools the tests drive for real: Kubernetes (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl) and Helm built from their Go modules
# by tools/build.sh (once: a stamp in ~/.cache/kubenas/tools), and Debian's Prometheus.
# Tests that need a missing one skip with the reason (and fail where
# KUBENAS_REQUIRE_TOOLS=1, as in CI).
tools: prometheus
	bash tools/build.sh

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
	$(BIN)/python benchmarks/nb201_strategies.py
	$(BIN)/python benchmarks/digits_demo.py
	$(BIN)/python benchmarks/operator_scale.py
	$(BIN)/python benchmarks/chaos.py

# Regenerate manifests/crds/ from operator/kubenas/spec.py (tests fail when they are stale).
crds: $(STAMP)
	$(BIN)/python -m kubenas.crds

clean:
	rm -rf $(VENV) runs
