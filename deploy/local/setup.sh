#!/usr/bin/env bash
# One-time set-up of the local default on a fresh Debian/Ubuntu machine (or a Mac with the
# servers already installed): the servers the tests start (Prometheus, PostgreSQL, Chromium for
# the UI test), a virtualenv with every Python dependency resolved in one install against the
# lock file, and a Dagster instance folder. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}

need_apt=()
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if ((${#need_apt[@]})); then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing Debian packages: ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
    # the Debian packages start their own services; the platform starts its own on demand
    for svc in prometheus postgresql; do $SUDO service "$svc" stop >/dev/null 2>&1 || true; done
  else
    echo "warning: no apt-get; install ${need_apt[*]} yourself for the integration tests" >&2
  fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# One resolve, pinned by the lock file: the Dagster family moves together.
.venv/bin/pip install -q -c constraints.txt -e '.[dev]'

mkdir -p data/dagster
cp deploy/local/dagster.yaml data/dagster/dagster.yaml
echo "set-up done: now 'source deploy/local/env.sh'"
