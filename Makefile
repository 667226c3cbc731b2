# Two commands: `make run` (set up and start the server) and `make test` (set up, lint, test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BUF    := node_modules/.bin/buf
LISTEN ?= 127.0.0.1:50051

.PHONY: setup run test proto proto-check web web-check lint bench clean

$(STAMP): pyproject.toml client/pyproject.toml examples/xcron-example-jobs/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e './client[cli]' -e '.[dev]' -e ./examples/xcron-example-jobs
	touch $@

$(BUF): package.json
	npm install --no-audit --no-fund --no-package-lock --loglevel=error
	touch $@

setup: $(STAMP) $(BUF)

HTTP_LISTEN ?= 127.0.0.1:8080

run: $(STAMP)
	$(BIN)/xcron-server --listen $(LISTEN) --http-listen $(HTTP_LISTEN) --schedule-file xcron.xml --data-dir .xcron-data

proto: $(STAMP) $(BUF)
	scripts/gen-proto.sh client docs/api.md server/xcron/server/api/connect_gen web/src/gen
	$(MAKE) web

# The jobs panel: web/src (TypeScript) bundled by esbuild into the server package, so that a pip-installed
# server serves it without npm. The output is deterministic, so web-check can compare it with what is committed.
WEB_STATIC := server/xcron/server/web/static
web: $(BUF)
	scripts/build-web.sh $(WEB_STATIC)

web-check: $(BUF)
	@tmp=$$(mktemp -d) && scripts/build-web.sh $$tmp && \
	if diff -q $$tmp/app.js $(WEB_STATIC)/app.js && diff -q $$tmp/app.css $(WEB_STATIC)/app.css && \
	   diff -q $$tmp/index.html $(WEB_STATIC)/index.html; then \
	  echo "web panel bundle is fresh"; rm -rf $$tmp; \
	else echo "web panel bundle is stale: run 'make web' and commit"; rm -rf $$tmp; exit 1; fi

# Regenerates into a scratch folder and compares with what is committed (stubs and docs/api.md).
proto-check: $(STAMP) $(BUF)
	@tmp=$$(mktemp -d) && scripts/gen-proto.sh $$tmp $$tmp/api.md $$tmp/connect $$tmp/es && \
	if diff -r -q $$tmp/xcron/v1 client/xcron/v1 -x __pycache__ -x __init__.py -x py.typed && \
	   diff -r -q $$tmp/connect server/xcron/server/api/connect_gen -x __pycache__ -x __init__.py && \
	   diff -r -q $$tmp/es web/src/gen && \
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
	node_modules/.bin/tsc -p web --noEmit

test: setup proto-check web-check lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
