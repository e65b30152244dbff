# Source me: the environment of the local default (virtualenv, Dagster and platform state folders).
_churn_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/../.." && pwd)"
export PATH="$_churn_root/.venv/bin:$PATH"
export CHURN_HOME="${CHURN_HOME:-$_churn_root/data}"
export DAGSTER_HOME="${DAGSTER_HOME:-$CHURN_HOME/dagster}"
# `mlflow ui` / `mlflow server` start job workers unless told not to; the platform needs none
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
mkdir -p "$DAGSTER_HOME"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || cp "$_churn_root/deploy/local/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
unset _churn_root
