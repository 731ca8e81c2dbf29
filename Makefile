# The two commands in the README: `make demo` (main job) and `make test` (whole suite).
# Both set everything up on a fresh machine: uv from the package index, then the locked
# environment. Nothing downloads a Python: the machine's python3 (3.11+) is used.

SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
# Installed packages get their bytecode compiled once, at install: every process the
# demo and the tests start (dozens) then imports pydantic, click, lark from .pyc.
export UV_COMPILE_BYTECODE := 1
# The interpreter itself, not what `python3` on PATH is: a pyenv shim there would make uv
# call the environment "incompatible" on every `uv run`.
export UV_PYTHON := $(shell python3 -c 'import sys; print(sys.executable)')
PATH := $(HOME)/.local/bin:$(PATH)
export PATH
UV := uv
RUN := $(UV) run --frozen --no-sync

.PHONY: setup demo demo-distributed test golden bench lint fmt

setup:
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --user --quiet uv
	@$(UV) sync --frozen --quiet

demo: setup
	$(RUN) python demo/run.py

# Two runtimes and two workers on a private Redis and PostgreSQL (docs/scaling.md).
demo-distributed: setup
	$(RUN) python demo/distributed.py

test: setup
	$(RUN) pytest

golden: setup
	$(RUN) oneiricc build
	$(RUN) python -m oneiric._plan.schema docs/plan.schema.json

bench: setup
	$(RUN) python bench/run.py

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check compiler runtime demo tests bench
	$(RUN) mypy
	$(RUN) lint-imports
