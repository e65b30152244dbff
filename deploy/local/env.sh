# Source me: the environment of the local default (virtualenv, Dagster and platform state folders).
_churn_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/../.." && pwd)"
export PATH="$_churn_root/.venv/bin:$PATH"
export CHURN_HOME="${CHURN_HOME:-$_churn_root/data}"
export DAGSTER_HOME="${DAGSTER_HOME:-$CHURN_HOME/dagster}"
# `mlflow ui` / `mlflow server` start job workers unless told not to; the platform needs none
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
# the platform's local MLflow store, so `mlflow` commands and the Python API find it without flags
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$CHURN_HOME/mlflow/mlflow.db}"
mkdir -p "$DAGSTER_HOME" "$CHURN_HOME/mlflow"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || cp "$_churn_root/deploy/local/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
unset _churn_root
