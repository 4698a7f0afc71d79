# C-SCALE Hub: the two commands (see README.md).
#   make up     set up everything, then bring the whole platform up on this machine
#   make test   set up everything, lint (ruff + the import contracts), then run the test suite
#               (in CI a skip is a failure); .ci/run is exactly `make test`
.PHONY: up test setup lint docs lock reliability bench-workshop

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

# docs/workshops.md's storm figures are the output of this run (bench/workshop_storm.py writes
# its generated block, with the commit and date; never edited by hand). The defaults are the
# size issue #25 asks about: 50 participants at 2/s on the full platform. Needs root and a quiet
# machine (~30-60 min on 2 cores); BENCH_USERS=10 for a quicker look.
BENCH_USERS ?= 50
BENCH_RATE ?= 2
bench-workshop: setup
	mkdir -p test-artifacts
	.venv/bin/python bench/workshop_storm.py --users $(BENCH_USERS) --rate $(BENCH_RATE) \
	  --json test-artifacts/bench-workshop.json --write-docs docs/workshops.md

# Re-resolve the locks after editing pyproject.toml (setup installs them exactly):
#   requirements.lock       the runtime of every process: the `localstack` extra (all the
#                           per-process extras), nothing of the `test` extra
#   requirements-test.lock  the FULL dev/CI set: the runtime plus the `test` extra, resolved with
#                           requirements.lock as constraints, so every package of the runtime
#                           keeps exactly its runtime pin (a test extra that needs another
#                           version fails the lock instead). scripts/setup.sh syncs the venv
#                           to this one file (plus the two editable distributions).
#   images/<image>/requirements.lock  what one image installs: the extras of its processes
#                           (IMAGE_EXTRAS), constrained by requirements.lock (the same pins)
# Pins already in a lock are kept (uv prefers them); `make lock UV_ARGS=--upgrade` moves them.
UV_ARGS ?=
IMAGE_EXTRAS = hub:hub gateway:gateway singleuser:singleuser,services
lock:
	.venv/bin/uv pip compile -q pyproject.toml --extra localstack \
	  --overrides requirements-overrides.txt --python .venv/bin/python $(UV_ARGS) -o requirements.lock
	.venv/bin/uv pip compile -q pyproject.toml --extra localstack --extra test \
	  --constraints requirements.lock --overrides requirements-overrides.txt \
	  --python .venv/bin/python $(UV_ARGS) -o requirements-test.lock
	for pair in $(IMAGE_EXTRAS); do \
	  image=$${pair%%:*} extras=$${pair#*:}; \
	  .venv/bin/uv pip compile -q pyproject.toml $$(printf -- ' --extra %s' $$(echo $$extras | tr , ' ')) \
	    --constraints requirements.lock --overrides requirements-overrides.txt \
	    --python .venv/bin/python -o images/$$image/requirements.lock || exit 1; \
	done

# the three images (images/README.md): images/build.sh with the digest-pinned base of
# images/bases.txt; IMAGES_ARGS passes options (--tool podman, --registry, --tag). STANDIN=1
# builds from the local Debian stand-in base instead (images/standin-base.sh; root, buildah),
# as tests/helm/test_containers.py does — for trying the images here, never for publishing.
.PHONY: images
IMAGES_ARGS ?=
images:
ifeq ($(STANDIN),1)
	images/build.sh --tool buildah --unpinned --base "$$(images/standin-base.sh)" \
	  $$(f=$${PIP_CERT:-$${SSL_CERT_FILE:-}}; test -f "$$f" && echo --ca-bundle "$$f") $(IMAGES_ARGS)
else
	images/build.sh $(IMAGES_ARGS)
endif
