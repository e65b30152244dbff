"""Loading a registered model version and the request schema it was trained with."""

from __future__ import annotations

from typing import Any

from churn_platform.core.spec import MODEL_METADATA_KEY, Spec, spec_of_model_metadata
from churn_platform.serving.model_server.schema import InputSchema


def model_spec(model_uri: str, tracking_uri: str | None = None) -> Spec:
    """The spec ``model_uri`` was logged with (its MLmodel metadata ``churn_spec``); the
    shipped default spec for a model logged before specs."""
    import mlflow
    from mlflow.models import get_model_info

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return spec_of_model_metadata(get_model_info(model_uri).metadata)


def schema_of_model_info(info: Any) -> InputSchema:
    """The request schema of a logged model (an MLflow ``ModelInfo``): its spec's features
    when it carries one, else its signature's columns, else the inputs of the spec a model
    logged before specs was trained on (``spec_of_model_metadata``: the shipped one)."""
    metadata = info.metadata or {}
    spec = spec_of_model_metadata(metadata)
    if MODEL_METADATA_KEY not in metadata and info.signature:
        return InputSchema.from_signature(info.signature, spec)
    return InputSchema.from_spec(spec)


def load_model(model_uri: str, tracking_uri: str | None = None) -> tuple[Any, InputSchema]:
    """Load the sklearn model and its input schema from MLflow.

    The schema follows the model's own spec (``schema_of_model_info``), so a server keeps
    taking the columns its model was trained on whatever spec is current now.
    """
    import tempfile

    import mlflow
    import mlflow.sklearn
    from mlflow.models import get_model_info

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    # Copy to a temp dir ($TMPDIR, /tmp in the pod): from a local artefact store MLflow
    # would load in place and write registered_model_meta into the store, which a
    # read-only mount refuses. The pickle is in memory once loaded.
    with tempfile.TemporaryDirectory(prefix="churn-model-") as dst:
        pipeline = mlflow.sklearn.load_model(model_uri, dst_path=dst)
    return pipeline, schema_of_model_info(get_model_info(model_uri)).in_model_order(pipeline)
