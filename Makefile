# The two quick-start commands. Both first set up whatever is missing (deploy/local/setup.sh:
# Debian packages, .venv, the instance folder; a no-op in a second when nothing changed).
#   make run    the main job, as `python -m churn_platform run` (extra options: ARGS="--job ...")
#   make test   what CI runs (.ci/run calls it): the Kubernetes API server build (cached), ruff,
#               mypy, then pytest (extra options: PYTEST_ARGS="-x -k canary")
SHELL := /bin/bash
ENV := source deploy/local/env.sh
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test setup kube-apiserver

setup:
	@bash deploy/local/setup.sh

run: setup
	@$(ENV) && python -m churn_platform run $(ARGS)

kube-apiserver:
	@bash .ci/build-kube-apiserver.sh

# Every step runs even when an earlier one fails, so one run shows everything to fix.
test: setup kube-apiserver
	@$(ENV); failed=(); \
	for step in "ruff check ." "ruff format --check ." "mypy churn_platform" "pytest $(PYTEST_ARGS)"; do \
	  echo "== $$step"; eval "$$step" || failed+=("$$step"); \
	done; \
	if (( $${#failed[@]} )); then printf 'make test failed: %s\n' "$${failed[@]}"; exit 1; fi; \
	echo "make test: all passed"
