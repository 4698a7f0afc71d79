#!/usr/bin/env bash
# Resolve the base image tag in images/bases.txt to its current digest and write it back
# (<name>:<tag>@sha256:...). Needs a registry-reaching machine with skopeo, crane or docker.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
line=$(grep '^BASE_IMAGE=' "$here/bases.txt")
ref=${line#BASE_IMAGE=}
ref=${ref%@*}
if command -v skopeo >/dev/null; then
  digest=$(skopeo inspect --format '{{.Digest}}' "docker://$ref")
elif command -v crane >/dev/null; then
  digest=$(crane digest "$ref")
elif command -v docker >/dev/null; then
  digest=$(docker buildx imagetools inspect "$ref" --format '{{json .Manifest.Digest}}' | tr -d '"')
else
  echo "pin-bases: need skopeo, crane or docker" >&2
  exit 2
fi
[[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "pin-bases: bad digest '$digest'" >&2; exit 1; }
sed -i "s|^BASE_IMAGE=.*|BASE_IMAGE=$ref@$digest|" "$here/bases.txt"
echo "BASE_IMAGE=$ref@$digest"
