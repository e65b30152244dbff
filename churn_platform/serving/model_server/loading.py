"""Loading a registered model version and the request schema it was trained with.

Only what the platform wrote is loaded: a version is saved with skops (never pickle), and
its registration records the SHA-256 of the skops file as the version tag
``ARTIFACT_DIGEST_TAG``. ``load_model`` downloads the version, refuses any other
serialization format, and checks the file against the recorded digest before reading a
byte of it, so a rewritten ``MLmodel`` or a replaced artefact stops the server at startup
(``/health`` answers 503 ``failed`` with the refusal) instead of running planted code.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from churn_platform.core.spec import MODEL_METADATA_KEY, Spec, spec_of_model_metadata
from churn_platform.serving.model_server.schema import InputSchema

#: The registered version's tag holding the SHA-256 of its skops artefact.
ARTIFACT_DIGEST_TAG = "model_artifact_sha256"
#: The only serialization format a server loads (skops refuses types it was not told to trust).
SKOPS_FORMAT = "skops"

_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))$")


class ArtifactRefused(RuntimeError):
    """A model artefact the platform did not write (wrong format, or digest mismatch)."""


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def skops_artifact(model_dir: Path, what: str) -> tuple[Path, list[str]]:
    """The skops file of a downloaded MLflow model folder and its trusted types, read from
    its ``MLmodel``; ``ArtifactRefused`` unless the sklearn flavour is saved with skops and
    its file lies inside the folder."""
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text()) or {}
    flavor = (mlmodel.get("flavors") or {}).get("sklearn") or {}
    fmt = flavor.get("serialization_format", "pickle")
    if fmt != SKOPS_FORMAT:
        raise ArtifactRefused(
            f"{what}: MLmodel says serialization_format {fmt!r}; a server loads only "
            f"{SKOPS_FORMAT!r} (the format the platform saves), so it refuses this version"
        )
    relative = str(flavor.get("pickled_model") or "")
    path = (model_dir / relative).resolve()
    if not relative or not path.is_file() or model_dir.resolve() not in path.parents:
        raise ArtifactRefused(f"{what}: MLmodel names model file {relative!r}, not a file here")
    return path, list(flavor.get("skops_trusted_types") or [])


def model_artifact_digest(model_dir: Path, what: str = "model") -> str:
    """The SHA-256 of a logged model's skops file (what registration records)."""
    path, _ = skops_artifact(Path(model_dir), what)
    return file_sha256(path)


def logged_model_digest(model_uri: str, tracking_uri: str | None) -> str:
    """The SHA-256 of a just-logged model's skops file (``runs:/...`` or ``models:/m-...``),
    to record as ``ARTIFACT_DIGEST_TAG`` when the version is registered. MLflow resolves a
    logged model's URI in the fluent tracking store: point it at ``tracking_uri`` first."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="churn-digest-") as dst:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri, dst_path=dst, tracking_uri=tracking_uri
        )
        return model_artifact_digest(Path(local), model_uri)


def registered_digest(model_uri: str, tracking_uri: str | None) -> tuple[str, str]:
    """``(version label, recorded digest)`` of ``models:/<name>/<version>`` or
    ``models:/<name>@<alias>``; ``ArtifactRefused`` for any other URI or a version
    registered without a digest."""
    from mlflow import MlflowClient

    match = _REGISTERED.match(model_uri)
    if match is None:
        raise ArtifactRefused(
            f"{model_uri}: a server loads registered versions only (models:/<name>/<version>), "
            "whose registration recorded the artefact's digest"
        )
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    name = match["name"]
    if match["alias"]:
        record = client.get_model_version_by_alias(name, match["alias"])
    else:
        record = client.get_model_version(name, match["version"])
    label = f"version {record.version} of {name}"
    digest = (record.tags or {}).get(ARTIFACT_DIGEST_TAG, "")
    if not digest:
        raise ArtifactRefused(
            f"{label} has no {ARTIFACT_DIGEST_TAG} tag: it was not registered by the "
            "platform (log_and_register), so its artefact cannot be verified"
        )
    return label, digest


def verified_pipeline(model_dir: Path, label: str, expected: str) -> Any:
    """Load the skops pipeline of a downloaded model folder once its file matches
    ``expected`` (the registered digest); ``ArtifactRefused`` naming the version, the file
    and both digests otherwise."""
    import skops.io

    path, trusted = skops_artifact(model_dir, label)
    actual = file_sha256(path)
    if actual != expected:
        raise ArtifactRefused(
            f"{label}: artefact {path.name} has sha256 {actual}, but its registration "
            f"recorded {expected}; the file was changed after registration, refusing to load it"
        )
    return skops.io.load(path, trusted=trusted)


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
    """Load the sklearn model and its input schema from MLflow, refusing an artefact the
    platform did not write (``verified_pipeline``).

    The schema follows the model's own spec (``schema_of_model_info``), so a server keeps
    taking the columns its model was trained on whatever spec is current now.
    """
    import mlflow
    from mlflow.models import Model

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    label, expected = registered_digest(model_uri, tracking_uri)
    # Copy to a temp dir ($TMPDIR, /tmp in the pod): from a local artefact store MLflow
    # would load in place and write registered_model_meta into the store, which a
    # read-only mount refuses. The pipeline is in memory once loaded.
    with tempfile.TemporaryDirectory(prefix="churn-model-") as dst:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri, dst_path=dst, tracking_uri=tracking_uri
            )
        )
        pipeline = verified_pipeline(local, label, expected)
        info = Model.load(str(local)).get_model_info()
    return pipeline, schema_of_model_info(info).in_model_order(pipeline)


def model_requirements(model_uri: str) -> tuple[dict[str, str], str | None]:
    """The ``name==version`` pins of a logged model's ``requirements.txt`` and the Python of
    its ``python_env.yaml`` (None when the model has none), read from the current MLflow
    store."""
    import mlflow
    import yaml

    from churn_platform.core.environment import parse_requirements

    with tempfile.TemporaryDirectory(prefix="churn-env-") as dst:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{model_uri.rstrip('/')}/requirements.txt", dst_path=dst
        )
        pins = parse_requirements(Path(path).read_text().splitlines())
        try:
            env = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{model_uri.rstrip('/')}/python_env.yaml", dst_path=dst
            )
        except Exception:  # noqa: BLE001 - a model logged without one: no Python to compare
            return pins, None
        python = (yaml.safe_load(Path(env).read_text()) or {}).get("python")
    return pins, str(python) if python else None
