#!/usr/bin/env bash
# Build the three images from the repository root with the base of images/bases.txt.
#   images/build.sh [--unpinned] [--tool docker|podman|buildah] [--tag TAG] [--registry REG]
# A base without a digest is refused unless --unpinned (stand-in builds in tests).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
tool=docker unpinned=0
tag=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$root/helm/cscale-hub/Chart.yaml")
registry=ghcr.io/c-scale
while [[ $# -gt 0 ]]; do
  case $1 in
    --unpinned) unpinned=1 ;;
    --tool) tool=$2; shift ;;
    --tag) tag=$2; shift ;;
    --registry) registry=$2; shift ;;
    *) echo "build.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
base=$(sed -n 's/^BASE_IMAGE=//p' "$here/bases.txt")
if [[ $base != *@sha256:* && $unpinned == 0 ]]; then
  echo "build.sh: $base has no digest; run images/pin-bases.sh (or pass --unpinned)" >&2
  exit 1
fi
for pair in singleuser:cscale-hub-singleuser hub:cscale-hub gateway:cscale-hub-gateway; do
  dir=${pair%%:*} name=${pair##*:}
  ignore="$here/$dir/Dockerfile.dockerignore"
  case $tool in
    # docker (BuildKit) reads <Dockerfile>.dockerignore by itself; podman/buildah are told
    buildah) build=(buildah bud --isolation chroot --ignorefile "$ignore") ;;
    podman) build=(podman build --ignorefile "$ignore") ;;
    *) build=("$tool" build) ;;
  esac
  "${build[@]}" --build-arg "BASE_IMAGE=$base" -f "$here/$dir/Dockerfile" \
    -t "$registry/$name:$tag" "$root"
done
