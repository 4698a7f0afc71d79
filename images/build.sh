#!/usr/bin/env bash
# Build the three images from the repository root with the base of images/bases.txt.
#   images/build.sh [--unpinned] [--tool docker|podman|buildah] [--tag TAG] [--registry REG]
#                   [--base IMAGE] [--ca-bundle FILE] [--only singleuser|hub|gateway]...
# A base without a digest is refused unless --unpinned (stand-in builds in tests: --base names
# the stand-in, images/standin-base.sh). --ca-bundle (podman/buildah) mounts FILE into every
# RUN step with a pip.conf pointing pip at it (/etc/xdg/pip) — for machines whose TLS to PyPI is
# intercepted; nothing of it is left in the image, and what gets installed is unchanged.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
tool=docker unpinned=0 base="" ca="" only=()
tag=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$root/helm/cscale-hub/Chart.yaml")
registry=ghcr.io/c-scale
while [[ $# -gt 0 ]]; do
  case $1 in
    --unpinned) unpinned=1 ;;
    --tool) tool=$2; shift ;;
    --tag) tag=$2; shift ;;
    --registry) registry=$2; shift ;;
    --base) base=$2; shift ;;
    --ca-bundle) ca=$(realpath "$2"); shift ;;
    --only) only+=("$2"); shift ;;
    *) echo "build.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
base=${base:-$(sed -n 's/^BASE_IMAGE=//p' "$here/bases.txt")}
if [[ $base != *@sha256:* && $unpinned == 0 ]]; then
  echo "build.sh: $base has no digest; run images/pin-bases.sh (or pass --unpinned)" >&2
  exit 1
fi
mounts=()
if [[ -n $ca ]]; then
  [[ $tool == docker ]] && { echo "build.sh: --ca-bundle needs --tool podman|buildah" >&2; exit 2; }
  # pip's site-wide config directory (/etc/xdg/pip): the bundle and a pip.conf naming it; the
  # image keeps only the empty mount point
  conf=$(mktemp -d); trap 'rm -rf "$conf"' EXIT
  cp "$ca" "$conf/ca.crt"
  printf '[global]\ncert = /etc/xdg/pip/ca.crt\n' >"$conf/pip.conf"
  chmod 755 "$conf"; chmod 644 "$conf/ca.crt" "$conf/pip.conf"
  mounts=(--volume "$conf:/etc/xdg/pip:ro")
fi
for pair in singleuser:cscale-hub-singleuser hub:cscale-hub gateway:cscale-hub-gateway; do
  dir=${pair%%:*} name=${pair##*:}
  if [[ ${#only[@]} -gt 0 && " ${only[*]} " != *" $dir "* ]]; then continue; fi
  ignore="$here/$dir/Dockerfile.dockerignore"
  case $tool in
    # docker (BuildKit) reads <Dockerfile>.dockerignore by itself; podman/buildah are told
    buildah) build=(buildah bud --isolation chroot --ignorefile "$ignore") ;;
    podman) build=(podman build --ignorefile "$ignore") ;;
    *) build=("$tool" build) ;;
  esac
  start=$SECONDS
  "${build[@]}" "${mounts[@]}" --build-arg "BASE_IMAGE=$base" -f "$here/$dir/Dockerfile" \
    -t "$registry/$name:$tag" "$root"
  echo "build.sh: $registry/$name:$tag built in $((SECONDS - start)) s" >&2
done
