# C-SCALE Hub: the two commands (see README.md).
#   make up     set up everything, then bring the whole platform up on this machine
#   make test   set up everything, lint (ruff + the import contracts), then run the test suite
#               (in CI a skip is a failure); .ci/run is exactly `make test`
.PHONY: up test setup lint docs lock reliability

ARGS ?=
PYTEST_ARGS ?=
LINT_PATHS = cscale_extensions hub_config tests bench tools testing
#: the layout's import contracts (tests/unit/test_import_contracts.py): checked before the
#: suite, so a broken boundary fails in a few seconds rather than after the stack tests
CONTRACTS = tests/unit/test_import_contracts.py

setup:
	@bash scripts/setup.sh

up: setup
	.venv/bin/cscale-hub up $(ARGS)

test: lint
	.venv/bin/python -m pytest $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check $(LINT_PATHS)
	.venv/bin/python -m pytest -q -p no:cacheprovider $(CONTRACTS)

docs: setup
	.venv/bin/cscale-hub config docs > docs/configuration.md

# docs/reliability.md is the report of the last complete run of tests/security, which writes it
# to test-artifacts/reliability.md (only when every reliability test ran); tests never touch docs/
reliability:
	@test -f test-artifacts/reliability.md || { echo "test-artifacts/reliability.md is missing:" \
	  "run all of tests/security first (make test, or .venv/bin/python -m pytest tests/security)"; \
	  exit 1; }
	cp test-artifacts/reliability.md docs/reliability.md
	@echo "docs/reliability.md updated from test-artifacts/reliability.md"

# Re-resolve the two locks after editing pyproject.toml (setup installs them exactly):
#   requirements.lock       the runtime: what the images and the local stack's processes run
#                           (pyproject's dependencies, nothing of the `test` extra)
#   requirements-test.lock  the FULL dev/CI set: the runtime plus the `test` extra, resolved with
#                           requirements.lock as constraints, so every package of the runtime
#                           keeps exactly its runtime pin (a test extra that needs another
#                           version fails the lock instead). scripts/setup.sh syncs the venv
#                           to this one file (plus the two editable distributions).
# Pins already in a lock are kept (uv prefers them); `make lock UV_ARGS=--upgrade` moves them.
UV_ARGS ?=
lock:
	.venv/bin/uv pip compile -q pyproject.toml --overrides requirements-overrides.txt \
	  --python .venv/bin/python $(UV_ARGS) -o requirements.lock
	.venv/bin/uv pip compile -q pyproject.toml --extra test --constraints requirements.lock \
	  --overrides requirements-overrides.txt --python .venv/bin/python $(UV_ARGS) \
	  -o requirements-test.lock
