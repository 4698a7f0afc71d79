#!/usr/bin/env bash
# Idempotent set-up of everything C-SCALE Hub needs on this machine: Debian packages,
# the Python environment (.venv, exactly requirements-test.lock), node packages, helper binaries.
# Called by `make up` and `make test`; safe to run again (it skips what is already current).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STAMPS=.venv/.cscale-stamps
say() { printf '[setup] %s\n' "$*"; }

# 1. Debian packages (PostgreSQL/PostGIS for the pgstac site, Chromium for browser tests, ...)
if [ -f scripts/apt-packages.txt ]; then
  mapfile -t want < <(grep -v '^\s*#' scripts/apt-packages.txt | awk 'NF{print $1}')
  missing=()
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      say "missing Debian packages: ${missing[*]} (run as root or: sudo apt-get install ${missing[*]})"; exit 1
    fi
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# 1b. per-user hosts of the local stack (<user>.hub.localhost): glibc must resolve *.localhost
#     to loopback, as Chromium does itself; libnss-myhostname does, once "myhostname" is on the
#     hosts line of /etc/nsswitch.conf (its postinst adds it; a hand-written file may lack it)
if ! getent hosts x.hub.localhost >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && [ -f /etc/nsswitch.conf ] && ! grep -Eq '^hosts:.*\bmyhostname\b' /etc/nsswitch.conf; then
    say "adding myhostname to the hosts line of /etc/nsswitch.conf"
    sed -i -E 's/^(hosts:[[:space:]]+files)/\1 myhostname/; t; s/^(hosts:.*)$/\1 myhostname/' /etc/nsswitch.conf
  fi
  if ! getent hosts x.hub.localhost >/dev/null; then
    say "error: this machine does not resolve x.hub.localhost (the local stack serves each user at"
    say "       <user>.hub.localhost). Install libnss-myhostname and put 'myhostname' on the hosts"
    say "       line of /etc/nsswitch.conf (e.g. 'hosts: files myhostname dns')."
    exit 1
  fi
fi

# 2. Python environment: Debian's python3 so that every user account can run it
PY=${CSCALE_PYTHON:-/usr/bin/python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $PY"
  "$PY" -m venv .venv
fi
mkdir -p "$STAMPS"
UV_VERSION=0.13.8
if [ "$(.venv/bin/uv --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  .venv/bin/pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
# The venv must hold exactly requirements-test.lock (the runtime lock plus the test extra, see
# the Makefile's `lock` target) and our two distributions, editable: the product and the test
# harness (testing/, no deps of its own). Checked against the venv itself on every run, not a
# stamp: `uv pip sync --dry-run` compares what is installed with the lock, and anything added,
# removed or at another version is synced back (--strict: and every dependency is present).
editables=$STAMPS/editables.txt
printf -- '-e file://%s\n-e file://%s/testing\n' "$ROOT" "$ROOT" > "$editables"
sync=(.venv/bin/uv pip sync --python .venv/bin/python --strict requirements-test.lock "$editables")
if ! plan=$("${sync[@]}" --dry-run 2>&1); then
  say "error: requirements-test.lock cannot be installed:"; printf '%s\n' "$plan"; exit 1
fi
if ! grep -q '^Would make no changes' <<<"$plan"; then
  say "syncing .venv with requirements-test.lock:"
  grep -E '^ [-+~] ' <<<"$plan" | head -40 || true
  "${sync[@]}" -q
fi
rm -f "$STAMPS"/py-*
# editable installs skip data-files: put the single-user server settings in place
for f in share/jupyter-server-config/*.json; do
  install -D -m 0644 "$f" ".venv/etc/jupyter/jupyter_server_config.d/${f##*/}"
done
install -D -m 0644 share/lab-settings/overrides.json .venv/share/jupyter/lab/settings/overrides.json

# 3. node packages (configurable-http-proxy, oidc-provider)
node_sum=$(sha256sum package-lock.json | cut -c1-16)
if [ ! -f node_modules/.cscale-$node_sum ]; then
  command -v npm >/dev/null || { say "npm is missing: install Node.js 20 and npm"; exit 1; }
  say "installing node packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  touch node_modules/.cscale-$node_sum
fi

# 4. optional helper binaries of the project (e.g. helm for the chart tests)
for s in scripts/setup.d/*.sh; do
  [ -e "$s" ] && bash "$s"
done

# user accounts must be able to reach the environment (system-users spawner)
if [ "$(id -u)" -eq 0 ]; then
  p=$ROOT
  while [ "$p" != / ]; do
    if [ "$(( $(stat -c '%a' "$p" | sed 's/^.*\(.\)$/\1/') & 1 ))" -eq 0 ]; then
      say "warning: $p is not searchable by other accounts; user servers cannot run the venv here."
      say "         clone the repository elsewhere (e.g. /opt or /srv) or chmod o+x $p"
      break
    fi
    p=$(dirname "$p")
  done
fi
say "ready"
