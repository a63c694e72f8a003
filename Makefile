# Two entry points for a fresh machine: `make demo` (set up + run the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1

.PHONY: setup setup-browser setup-postgres demo test test-slow lint benchmark

# PyTorch's default x86_64 wheels carry CUDA libraries (~7 GB installed): a new .venv fails early, saying so,
# on a full disk instead of pip's OSError halfway through.
SETUP_DISK_GB ?= 8

$(BIN)/smokeseg: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -c "import os, shutil, sys; \
	free = shutil.disk_usage(os.path.dirname(os.path.abspath('$(VENV)'))).free / 1e9; \
	sys.exit(0 if free >= $(SETUP_DISK_GB) else \
	f'smokeseg set-up needs about $(SETUP_DISK_GB) GB free for $(VENV) (PyTorch with its CUDA libraries); ' \
	f'only {free:.1f} GB free here. Free some space, or set VENV= to a folder on a larger disk.')"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

setup: $(BIN)/smokeseg

# The browser tests drive the system's chromium (Playwright cannot download its own here). Where it cannot
# be installed (no root), the browser tests skip with that reason and the rest of the suite still runs.
setup-browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq chromium; } || \
		echo "chromium could not be installed: the browser tests will be skipped"

# The PostgreSQL tests start Debian's server on loopback (the service's catalogue as a team runs it); they
# skip, saying so, where it cannot be installed.
setup-postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq postgresql; } || \
		echo "postgresql could not be installed: the PostgreSQL tests will be skipped"

demo: setup
	$(BIN)/smokeseg demo

test: setup setup-browser setup-postgres
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src benchmarks
	$(BIN)/python -m pytest

test-slow: setup setup-browser setup-postgres
	$(BIN)/python -m pytest -m slow

# SUITE=accuracy INIT_FROM=output/smoke-pretrain-real for the recipes (see benchmarks/RESULTS.md).
SUITE ?= reference
benchmark: setup
	$(BIN)/python benchmarks/run.py $(SUITE) $(if $(INIT_FROM),--init-from $(INIT_FROM))
