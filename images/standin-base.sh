#!/usr/bin/env bash
# Make a stand-in for the images' base (images/bases.txt: python:3.11-slim-bookworm) where no
# registry base can be pulled: Debian 12 from this machine's Debian mirror (debootstrap), with
# Debian's Python 3.11 laid out as the official image has it for our Dockerfiles — a Python
# environment at /usr/local (python, pip on PATH, no EXTERNALLY-MANAGED marker, Debian's own
# python3-* packages not visible), tini/apt as usual. Imported into podman/buildah storage as
#   localhost/cscale-standin/python:3.11-slim-bookworm
# — a name that can never be mistaken for a release base; images/build.sh refuses it without
# --unpinned. Cached per machine: the rootfs tarball is kept in $CSCALE_STANDIN_CACHE
# (default /var/tmp/cscale-standin-base) under the hash of this script, and re-imported when the
# image in storage is missing or of another recipe (its label org.c-scale.standin-recipe).
#   images/standin-base.sh [--print-name] [--rebuild]
set -euo pipefail
name=localhost/cscale-standin/python:3.11-slim-bookworm
cache=${CSCALE_STANDIN_CACHE:-/var/tmp/cscale-standin-base}
rebuild=0
for arg in "$@"; do
  case $arg in
    --print-name) echo "$name"; exit 0 ;;
    --rebuild) rebuild=1 ;;
    *) echo "standin-base.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
[[ $(id -u) == 0 ]] || { echo "standin-base.sh: debootstrap and rootful podman need root" >&2; exit 1; }
for tool in debootstrap podman; do
  command -v "$tool" >/dev/null || { echo "standin-base.sh: $tool missing (scripts/apt-packages.txt)" >&2; exit 1; }
done
# the first http(s) Debian mirror of this machine's apt sources (deb822 or one-line format)
mirror=$(grep -rhoE '(URIs:|^deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
  | grep -oE 'https?://[^ ]+' | head -n1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
# the recipe (this script) names the cached rootfs and labels the image: edit it, get a new one
recipe=$(sha256sum "$0" | cut -c1-12)
tarball=$cache/rootfs-$recipe.tar
label=org.c-scale.standin-recipe
mkdir -p -m 0700 "$cache"
exec 9>"$cache/lock"
flock 9   # one builder per machine; the others wait and reuse it
if [[ $rebuild == 1 ]]; then rm -f "$tarball"; podman rmi -f "$name" >/dev/null 2>&1 || true; fi
if [[ ! -s $tarball ]]; then
  rm -f "$cache"/rootfs-*.tar
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include=ca-certificates \
    bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { cp "$root/debootstrap/debootstrap.log" "$cache/" 2>/dev/null; tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  # the sources the official Debian images carry (main, updates, security)
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian*}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # Debian's Python 3.11 with venv (apt in the chroot: debootstrap's own resolver fails on it)
  chroot "$root" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install \
    -y -qq --no-install-recommends python3.11 python3.11-venv' >>"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  # python/pip at /usr/local like python:3.11-slim: a venv rooted there (pip from Debian's
  # bundled wheel), so `pip install` works as root and sees none of Debian's python3-* modules
  chroot "$root" /usr/bin/python3.11 -m venv /usr/local
  chroot "$root" /usr/local/bin/python -m pip --version >/dev/null
  rm -f "$root/usr/lib/python3.11/EXTERNALLY-MANAGED"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$root"; trap - EXIT
  podman rmi -f "$name" >/dev/null 2>&1 || true
fi
have=$(podman image inspect -f "{{index .Labels \"$label\"}}" "$name" 2>/dev/null || true)
if [[ $have != "$recipe" ]]; then
  podman rmi -f "$name" >/dev/null 2>&1 || true
  podman import --change "LABEL $label=$recipe" --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$tarball" "$name" >/dev/null 2>&1
fi
echo "$name"
