"""The MLflow tracking store and model registry, as one small Dagster resource.

dagster-mlflow's resource is legacy and beta; this wraps ``mlflow.MlflowClient``
instead, so every call names its tracking URI and nothing depends on a run that
some other step started. The default store is a SQLite file under ``CHURN_HOME``;
``MLFLOW_TRACKING_URI`` (or the ``tracking_uri`` field) points it elsewhere. With a database
store the experiment's artefacts go under ``CHURN_STORAGE_URL`` (``<url>/mlflow`` on an
object store; MLflow's S3 client reads the AWS variables itself). The artifact location is
fixed when the experiment is created: an experiment made before ``CHURN_STORAGE_URL``
changed keeps writing where it did.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from churn_platform.core import records
from churn_platform.core.cbpe import CALIBRATOR_ARTIFACT, IsotonicCalibrator
from churn_platform.core.environment import PINNED_PACKAGES
from churn_platform.core.spec import MODEL_METADATA_KEY, Spec, spec_of_model_metadata
from churn_platform.resources import churn_flavor
from churn_platform.serving.model_server.loading import ARTIFACT_DIGEST_TAG, logged_model_digest
from churn_platform.serving.model_server.raw_records import raw_column_names
from churn_platform.settings import MODEL_NAME

# Requirements pinned to the versions training ran with: the serving environment is the
# training environment. Passing them also skips MLflow's slow requirement inference.


@contextmanager
def _fluent_store(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (needed by ``log_model``) at ``uri`` for a block, then restore.

    ``mlflow.set_tracking_uri`` / ``set_registry_uri`` change module globals and export
    ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI`` into ``os.environ``; left in place they
    would leak this store into every later client in the process, and into child processes.
    """
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_globals = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved_globals
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _is_database_uri(uri: str) -> bool:
    """Whether ``uri`` is a database-backed store (artefacts are then ours to place)."""
    return uri.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "mysql", "mssql")


def owner_only_sqlite(uri: str) -> None:
    """Create a ``sqlite:///`` store's file readable by its owner only (0600), or narrow an
    existing one: the store holds every run's parameters and tags. SQLite gives its journal
    files the database's mode, and takes an empty file as a new database."""
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)


def _pyfunc_signature(pipeline: Any, example: pd.DataFrame, spec: Spec) -> Any:
    """The logged signature: pyfunc (mlflow.pyfunc / spark_udf / mlflow models serve) answers
    P(churn) per row, the number the servers answer (``churn_flavor``), and takes rows as the
    source holds them too (``raw_records``): the features optional, each source-only column
    an optional ``Any``, so MLflow's schema enforcement lets such a frame through."""
    answers = churn_flavor.ChurnProbability(pipeline).predict(example)
    return churn_flavor.accepting_raw_columns(
        infer_signature(example, answers), raw_column_names(spec)
    )


def pinned_requirements() -> list[str]:
    """``name==version`` for every package the saved pipeline needs to load and predict."""
    return [f"{name}=={metadata.version(name)}" for name in PINNED_PACKAGES]


@dataclass(frozen=True)
class RegisteredModel:
    """A logged and registered model version."""

    name: str
    version: str
    run_id: str
    experiment_id: str
    model_uri: str  # models:/<name>/<version>


class MlflowRegistry(dg.ConfigurableResource):
    """MLflow tracking and registry for one model.

    ``tracking_uri`` is the store (``PlatformConfig.mlflow_uri``: ``MLFLOW_TRACKING_URI``, else
    ``sqlite:///$CHURN_HOME/mlflow/mlflow.db``). ``artifact_location`` is where a database
    store's new experiment keeps its artefacts (empty: MLflow's default).
    ``model_name`` is the registered model whose versions and aliases this resource moves.
    ``ui_url`` is only used to build links in Dagster metadata (start the UI with
    ``mlflow ui --backend-store-uri <uri>``).
    """

    tracking_uri: str
    artifact_location: str = ""
    experiment_name: str = "churn"
    model_name: str = MODEL_NAME
    ui_url: str = "http://127.0.0.1:5000"

    def uri(self) -> str:
        """The tracking URI."""
        return self.tracking_uri

    def client(self) -> MlflowClient:
        """An MLflow client bound to this store (tracking and registry); a SQLite store's
        file is created owner-only first (``owner_only_sqlite``)."""
        owner_only_sqlite(self.uri())
        return MlflowClient(tracking_uri=self.uri(), registry_uri=self.uri())

    def experiment_id(self) -> str:
        """The experiment's id, created on first use (artifacts beside a local SQLite store)."""
        client = self.client()
        found = client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            return found.experiment_id
        # a database store keeps artefacts where CHURN_STORAGE_URL says (<url>/mlflow on an
        # object store); a tracking server decides for itself (--artifacts-destination)
        location = (self.artifact_location or None) if _is_database_uri(self.uri()) else None
        if location and location.startswith("file:"):
            Path(location.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        try:
            return client.create_experiment(self.experiment_name, artifact_location=location)
        except MlflowException:  # created concurrently
            created = client.get_experiment_by_name(self.experiment_name)
            if created is None:
                raise
            return created.experiment_id

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """Link to a run in the MLflow UI."""
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def version_run_url(self, version: str) -> str:
        """Link to the MLflow run that logged a registered version."""
        run_id = self.version_info(version).run_id
        return self.run_url(self.client().get_run(run_id).info.experiment_id, run_id)

    def version_url(self, version: str) -> str:
        """Link to a registered version in the MLflow UI."""
        return f"{self.ui_url.rstrip('/')}/#/models/{self.model_name}/versions/{version}"

    def log_and_register(
        self,
        pipeline: Any,
        input_example: pd.DataFrame,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        json_artifacts: dict[str, Any],
        run_name: str,
        spec: Spec,
    ) -> RegisteredModel:
        """Log a fitted pipeline with its evidence in one MLflow run and register it as a new version.

        The model is saved with its signature (the spec's feature columns, optional, and its
        source-only columns: the pyfunc maps raw rows with the spec), an input example,
        pinned requirements, the skops trusted types it needs and its spec in the MLmodel
        metadata (``churn_spec``; read it back with ``spec_of_version``): a model carries its
        own spec. The run and the version are tagged ``spec_hash``; the run also keeps the
        spec as ``spec.yaml``; the version also records the SHA-256 of its skops file
        (``ARTIFACT_DIGEST_TAG``), which a server verifies before loading. ``json_artifacts`` (name -> JSON-able) are stored beside it. No alias is set here: aliases move only
        after the step that justifies them. Its pyfunc flavour answers P(churn) per row
        (``churn_flavor``); the sklearn flavour is MLflow's own.
        """
        import skops.io as sio

        columns = list(spec.feature_names)
        missing = [c for c in columns if c not in input_example.columns]
        if missing:
            raise ValueError(
                f"input_example lacks the spec's feature column(s) {missing}; pass the model "
                f"inputs of spec {spec.name!r} (core.training.model_inputs(frame, spec))"
            )
        tags = {**tags, records.TAG_SPEC_HASH: spec.hash}
        experiment_id = self.experiment_id()
        example = input_example[columns].head(5)
        signature = _pyfunc_signature(pipeline, example, spec)
        trusted = sio.get_untrusted_types(data=sio.dumps(pipeline))
        with (
            _fluent_store(self.uri()),
            mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run,
        ):
            mlflow.log_params(params)
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
            with tempfile.TemporaryDirectory() as tmp:
                for name, content in json_artifacts.items():
                    path = Path(tmp) / name
                    path.write_text(
                        content
                        if isinstance(content, str)
                        else json.dumps(content, indent=2, default=str)
                    )
                    mlflow.log_artifact(str(path))
            mlflow.log_text(spec.to_yaml(), "spec.yaml")
            info = churn_flavor.log_model(
                pipeline,
                name="model",
                signature=signature,
                input_example=example,
                pip_requirements=pinned_requirements(),
                skops_trusted_types=trusted,
                # as JSON text: MLflow writes MLmodel with sorted keys, which would reorder features
                metadata={MODEL_METADATA_KEY: json.dumps(spec.to_dict())},
            )
            run_id = run.info.run_id
        # what a server checks the artefact against before loading it (serving.model_server.loading)
        with _fluent_store(self.uri()):
            digest = logged_model_digest(info.model_uri, self.uri())
            version = mlflow.register_model(
                info.model_uri, self.model_name, tags={**tags, ARTIFACT_DIGEST_TAG: digest}
            )
        return RegisteredModel(
            name=self.model_name,
            version=str(version.version),
            run_id=run_id,
            experiment_id=experiment_id,
            model_uri=self.model_uri(str(version.version)),
        )

    def model_uri(self, version: str) -> str:
        """The URI deployment targets load ``version`` from: ``models:/<name>/<version>``."""
        return f"models:/{self.model_name}/{version}"

    def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        """Tag a registered version (check outcomes, deployment state)."""
        client = self.client()
        for key, value in tags.items():
            client.set_model_version_tag(self.model_name, version, key, value)

    def alias_version(self, alias: str) -> str | None:
        """The version an alias points at, or None when the alias (or the model) does not exist."""
        try:
            return str(self.client().get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException:
            return None

    def set_alias(self, alias: str, version: str) -> None:
        """Point ``alias`` at ``version``."""
        self.client().set_registered_model_alias(self.model_name, alias, version)

    def aliases(self) -> dict[str, str]:
        """Every alias of the model and its version (empty before the first registration)."""
        try:
            model = self.client().get_registered_model(self.model_name)
        except MlflowException:
            return {}
        return {alias: str(version) for alias, version in model.aliases.items()}

    def version_info(self, version: str) -> Any:
        """The registry's record of a version (run id, tags, source)."""
        return self.client().get_model_version(self.model_name, version)

    def version_metrics(self, version: str) -> dict[str, float]:
        """The metrics logged in the run that registered ``version`` (holdout AUC and its
        interval, training figures)."""
        return dict(self.client().get_run(self.version_info(version).run_id).data.metrics)

    def _model_ref(self, version: str) -> str:
        """``models:/<name>/<version>`` or ``models:/<name>@<alias>`` for ``@alias``."""
        return f"models:/{self.model_name}{version if version.startswith('@') else '/' + version}"

    def load_model(self, version: str) -> Any:
        """Load a registered version's pipeline (``version`` is a number or ``@alias``)."""
        ref = self._model_ref(version)
        with _fluent_store(self.uri()):
            return mlflow.sklearn.load_model(ref)

    def spec_of_version(self, version: str) -> Spec:
        """The spec a registered version was trained with, from its MLmodel metadata
        (``version`` is a number or ``@alias``); versions logged before specs existed get
        the shipped churn spec."""
        ref = self._model_ref(version)
        with _fluent_store(self.uri()):
            info = mlflow.models.get_model_info(ref)
        return spec_of_model_metadata(info.metadata)

    def load_json_artifact(self, run_id: str, name: str) -> Any:
        """A JSON artifact logged with ``log_and_register`` (e.g. the drift reference profile)."""
        with _fluent_store(self.uri()), tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=name, dst_path=tmp, tracking_uri=self.uri()
            )
            return json.loads(Path(path).read_text())

    def find_json_artifact(self, run_id: str, name: str) -> Any | None:
        """Like ``load_json_artifact``, but None when the run has no such artifact."""
        try:
            return self.load_json_artifact(run_id, name)
        except MlflowException:
            return None

    def calibrator_of_version(self, version: str) -> IsotonicCalibrator | None:
        """The CBPE calibrator logged with ``version`` (fitted on its holdout at training
        time), or None for a version logged without one."""
        found = self.find_json_artifact(self.version_info(version).run_id, CALIBRATOR_ARTIFACT)
        return None if found is None else IsotonicCalibrator.from_dict(found)

    def log_run_artifact(self, run_id: str, name: str, content: str | bytes) -> None:
        """Attach a file to an existing run (the evaluation report to the challenger's run)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
            self.client().log_artifact(run_id, str(path))
