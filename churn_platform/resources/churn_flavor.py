"""A churn model's MLflow flavours: scikit-learn's, with a pyfunc that answers P(churn).

MLflow's sklearn flavour lets ``pyfunc`` call only ``predict`` (class labels) or
``predict_proba`` (two columns). A churn model logged through ``log_model`` here keeps the
``sklearn`` flavour unchanged (``mlflow.sklearn.load_model``, skops, trusted types) and names
this file its ``python_function`` loader: ``save_model`` copies it into the model
(``code/churn_flavor.py``), so ``mlflow.pyfunc.load_model(...).predict(frame)``,
``mlflow.pyfunc.spark_udf`` and ``mlflow models serve`` return one float per row, the churn
probability, the number the platform's servers answer.

The file is loaded where the platform is not installed (a notebook, Spark, ``mlflow models
serve`` in the model's own environment): it imports only MLflow and what the model's pinned
requirements bring, never ``churn_platform``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

#: The loader module's name inside a logged model (``<model>/code/churn_flavor.py``).
LOADER_MODULE = "churn_flavor"
_CODE_DIR = "code"


class ChurnProbability:
    """The pyfunc implementation: ``predict`` is P(churn) per row, a 1-D float array."""

    def __init__(self, sklearn_model: Any) -> None:
        self.sklearn_model = sklearn_model

    def get_raw_model(self) -> Any:
        """The fitted scikit-learn pipeline (MLflow's ``unwrap_python_model`` convention)."""
        return self.sklearn_model

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """P(churn) for each row of ``data``: column 1 of ``predict_proba``, as the platform's
        servers and ``core.training.predict_proba`` read it (the spec maps churned to 1)."""
        return self.sklearn_model.predict_proba(data)[:, 1]


def _load_pyfunc(path: str, model_config: Any = None) -> ChurnProbability:
    """MLflow's pyfunc entry point: load the sklearn flavour's pipeline and wrap it."""
    from mlflow.sklearn import _load_pyfunc as load_sklearn_pyfunc

    return ChurnProbability(load_sklearn_pyfunc(path).get_raw_model())


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
