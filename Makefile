# Two commands: `make run` (set up and start the server) and `make test` (set up, lint, test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BUF    := node_modules/.bin/buf
LISTEN ?= 127.0.0.1:50051

.PHONY: setup run test proto proto-check lint bench clean

$(STAMP): pyproject.toml client/pyproject.toml examples/xcron-example-jobs/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e './client[cli]' -e '.[dev]' -e ./examples/xcron-example-jobs
	touch $@

$(BUF): package.json
	npm install --no-audit --no-fund --no-package-lock --loglevel=error
	touch $@

setup: $(STAMP) $(BUF)

run: $(STAMP)
	$(BIN)/xcron-server --listen $(LISTEN) --schedule-file xcron.xml --data-dir .xcron-data

proto: $(STAMP)
	scripts/gen-proto.sh client docs/api.md

# Regenerates into a scratch folder and compares with what is committed (stubs and docs/api.md).
proto-check: $(STAMP)
	@tmp=$$(mktemp -d) && scripts/gen-proto.sh $$tmp $$tmp/api.md && \
	if diff -r -q $$tmp/xcron/v1 client/xcron/v1 -x __pycache__ -x __init__.py -x py.typed && \
	   diff -q $$tmp/api.md docs/api.md; then \
	  echo "generated code and docs/api.md are fresh"; rm -rf $$tmp; \
	else echo "generated code or docs/api.md is stale: run 'make proto' and commit"; rm -rf $$tmp; exit 1; fi

# buf breaking: uncommitted proto changes against HEAD; on a clean tree (CI), the last commit against
# the one before it. Skipped, saying so, where git history is not available.
lint: setup
	$(BUF) lint
	@if ! git rev-parse --verify -q HEAD >/dev/null; then echo "buf breaking: no git history, skipped"; \
	elif ! git diff --quiet HEAD -- protos; then $(BUF) breaking --against '.git#ref=HEAD' && echo "buf breaking: OK against HEAD"; \
	elif git rev-parse --verify -q HEAD~1 >/dev/null; then $(BUF) breaking --against '.git#ref=HEAD~1' && echo "buf breaking: OK against HEAD~1"; \
	else echo "buf breaking: only one commit, skipped"; fi
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: setup proto-check lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
