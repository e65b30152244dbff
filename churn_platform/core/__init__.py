"""Pure Python logic: no Dagster, MLflow or Kubernetes import below this package."""
