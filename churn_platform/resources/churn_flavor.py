"""A churn model's MLflow flavours: scikit-learn's, with a pyfunc that answers P(churn).

MLflow's sklearn flavour lets ``pyfunc`` call only ``predict`` (class labels) or
``predict_proba`` (two columns). A churn model logged through ``log_model`` here keeps the
``sklearn`` flavour unchanged (``mlflow.sklearn.load_model``, skops, trusted types) and names
this file its ``python_function`` loader: ``save_model`` copies it into the model
(``code/churn_flavor.py``), so ``mlflow.pyfunc.load_model(...).predict(frame)``,
``mlflow.pyfunc.spark_udf`` and ``mlflow models serve`` return one float per row, the churn
probability, the number the platform's servers answer.

Records as the source holds them (issue 25): a model logged with its spec (MLmodel metadata
``churn_spec``, what ``MlflowRegistry.log_and_register`` writes) maps the frame it is given
with that spec before scoring (``serving.model_server.raw_records.canonical_frame``: source
column names, value maps, text typed, blanks null), as the platform's servers map records;
its signature (``accepting_raw_columns``) declares the features optional and each source-only
column as an optional ``Any``, so MLflow's schema enforcement lets such a frame through.

The file is loaded where the platform may not be installed (a notebook, Spark, ``mlflow
models serve`` in the model's own environment): it imports only MLflow and what the model's
pinned requirements bring, and ``churn_platform`` only to map the rows of a model that carries
a spec when the platform is installed (the platform's trainer builds its feature steps from
``churn_platform`` classes, which need it to load anyway); without it, rows are scored as
given, in the features' names and types.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

#: The loader module's name inside a logged model (``<model>/code/churn_flavor.py``).
LOADER_MODULE = "churn_flavor"
_CODE_DIR = "code"
#: The MLmodel metadata key of the model's spec (``core.spec.MODEL_METADATA_KEY``).
SPEC_METADATA_KEY = "churn_spec"


class ChurnProbability:
    """The pyfunc implementation: ``predict`` is P(churn) per row, a 1-D float array.

    ``spec_json`` is the model's own spec (its MLmodel metadata ``churn_spec``), None for a
    model logged without one: with it, ``predict`` maps raw rows onto the spec's features.
    """

    def __init__(self, sklearn_model: Any, spec_json: str | None = None) -> None:
        self.sklearn_model = sklearn_model
        self.spec_json = spec_json

    def get_raw_model(self) -> Any:
        """The fitted scikit-learn pipeline (MLflow's ``unwrap_python_model`` convention)."""
        return self.sklearn_model

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """P(churn) for each row of ``data``: column 1 of ``predict_proba``, as the platform's
        servers and ``core.training.predict_proba`` read it (the spec maps churned to 1)."""
        if self.spec_json is not None and _platform_installed():
            data = self._mapped(data)
        return self.sklearn_model.predict_proba(data)[:, 1]

    def _mapped(self, data: Any) -> Any:
        """``data`` mapped with the model's spec, in the columns the pipeline was fitted on."""
        import pandas as pd

        from churn_platform.core.spec import spec_from_json
        from churn_platform.serving.model_server.raw_records import canonical_frame

        spec = spec_from_json(str(self.spec_json))
        frame = canonical_frame(pd.DataFrame(data), spec)
        fitted = [str(c) for c in getattr(self.sklearn_model, "feature_names_in_", spec.features)]
        missing = [c for c in fitted if c not in frame.columns]
        if missing:
            sources = {c: spec.source_of(c) for c in missing if c in spec.features}
            raise ValueError(
                f"the rows lack the model's input column(s) {missing}; send each under its "
                f"feature name or its source column name {sources} (spec {spec.name!r})"
            )
        return frame[fitted]


def _platform_installed() -> bool:
    """Whether ``churn_platform`` can be imported here: the raw-row mapping needs it; without
    it (a plain scikit-learn pipeline loaded in a notebook) frames are scored as given, in
    the features' names and types."""
    import importlib.util

    try:
        return importlib.util.find_spec("churn_platform") is not None
    except (ImportError, ValueError):
        return False


def _model_metadata(path: str) -> dict[str, Any]:
    """The ``metadata`` of the MLmodel beside (or in) ``path``, the model's data path."""
    import yaml

    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        return {}
    return (yaml.safe_load(mlmodel.read_text()) or {}).get("metadata") or {}


def _load_pyfunc(path: str, model_config: Any = None) -> ChurnProbability:
    """MLflow's pyfunc entry point: load the sklearn flavour's pipeline and wrap it."""
    from mlflow.sklearn import _load_pyfunc as load_sklearn_pyfunc

    spec = _model_metadata(path).get(SPEC_METADATA_KEY)
    spec_json = spec if isinstance(spec, str) or spec is None else json.dumps(spec)
    return ChurnProbability(load_sklearn_pyfunc(path).get_raw_model(), spec_json)


def accepting_raw_columns(signature: Any, raw_columns: list[str]) -> Any:
    """``signature`` with every input optional and each of ``raw_columns`` (a spec's
    source-only column names) added as an optional ``Any``: MLflow's schema enforcement then
    passes a frame in the source's form through to ``predict``, which maps it."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    declared = [ColSpec(c.type, c.name, required=False) for c in signature.inputs.inputs if c.name]
    names = {c.name for c in declared}
    raw = [ColSpec(AnyType(), n, required=False) for n in raw_columns if n not in names]
    return ModelSignature(Schema([*declared, *raw]), signature.outputs, signature.params)


def save_model(path: str, sk_model: Any, mlflow_model: Any = None, **kwargs: Any) -> None:
    """``mlflow.sklearn.save_model``, then make this file the ``python_function`` loader.

    Every keyword goes to MLflow's sklearn flavour (signature, input example, requirements,
    skops trusted types, metadata). ``pyfunc_predict_fn`` must be left out: ``predict`` is
    the churn probability.
    """
    import mlflow.sklearn
    from mlflow.models import Model

    if "pyfunc_predict_fn" in kwargs:
        raise TypeError("churn_flavor.save_model: pyfunc predict is the churn probability")
    mlflow_model = mlflow_model if mlflow_model is not None else Model()
    mlflow.sklearn.save_model(sk_model, path, mlflow_model=mlflow_model, **kwargs)
    code = Path(path) / _CODE_DIR
    code.mkdir(exist_ok=True)
    shutil.copyfile(__file__, code / f"{LOADER_MODULE}.py")
    pyfunc_conf = mlflow_model.flavors["python_function"]
    pyfunc_conf.update(loader_module=LOADER_MODULE, code=_CODE_DIR, predict_fn="predict")
    mlflow_model.save(str(Path(path) / "MLmodel"))


def log_model(sk_model: Any, name: str, **kwargs: Any) -> Any:
    """Log ``sk_model`` to the active run with both flavours (``mlflow.sklearn.log_model``'s keywords)."""
    from mlflow.models import Model

    return Model.log(
        artifact_path=None,
        name=name,
        flavor=sys.modules[__name__],
        flavor_name="mlflow.sklearn",
        sk_model=sk_model,
        **kwargs,
    )
