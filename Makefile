# C-SCALE Hub: the two commands (see README.md).
#   make up     set up everything, then bring the whole platform up on this machine
#   make test   set up everything, lint, then run the test suite (in CI a skip is a failure)
.PHONY: up test setup lint docs lock

ARGS ?=
PYTEST_ARGS ?=

setup:
	@bash scripts/setup.sh

up: setup
	.venv/bin/cscale-hub up $(ARGS)

test: setup
	.venv/bin/ruff check cscale_extensions hub_config tests bench tools testing
	.venv/bin/python -m pytest $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check cscale_extensions hub_config tests bench tools testing

docs: setup
	.venv/bin/cscale-hub config docs > docs/configuration.md

# re-resolve requirements.lock after editing pyproject.toml (setup installs the lock exactly)
lock:
	.venv/bin/uv pip compile pyproject.toml --extra test --overrides requirements-overrides.txt \
	  --python .venv/bin/python -o requirements.lock
