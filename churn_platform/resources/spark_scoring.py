"""Batch scoring of a registered model version on either engine.

``score_on_spark`` runs ``mlflow.pyfunc.spark_udf`` of the version over a validated Spark
frame (the Spark engine's ``Validation.frame``); ``score_on_pandas`` loads the same pyfunc in
this process. Both return the entity id and ``probability`` (P(churn), the pyfunc's answer)
per row, and give the same numbers on the same rows (a test holds them within 1e-12).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pandas as pd

from churn_platform.core.spec import Spec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

PROBABILITY = "probability"


@contextmanager
def _tracking(uri: str) -> Iterator[None]:
    """MLflow pointed at ``uri`` for the block, the previous store restored after it."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def score_on_spark(
    spark: SparkSession, frame: DataFrame, model_uri: str, spec: Spec, tracking_uri: str
) -> DataFrame:
    """A Spark frame of (entity id, ``probability``) for every row of ``frame``.

    ``frame`` holds the spec's features in canonical types (``core.engines.validate`` on the
    Spark engine gives one); ``model_uri`` is a registered version or alias
    (``models:/churn_model@champion``). The model's Python environment is this one
    (``env_manager="local"``): executors need the model's requirements installed (on
    Kubernetes, in the Spark image).
    """
    import mlflow.pyfunc

    from churn_platform.core.engines.spark_mapping import quoted

    missing = [c for c in (spec.id_column, *spec.feature_names) if c not in frame.columns]
    if missing:
        raise ValueError(
            f"the frame to score lacks column(s) {missing} of spec {spec.name!r}; score the "
            "validated frame (core.engines.validate), which has every spec column"
        )
    with _tracking(tracking_uri):
        churn = mlflow.pyfunc.spark_udf(spark, model_uri, result_type="double", env_manager="local")
    features = [quoted(c).alias(c) for c in spec.feature_names]
    return frame.select(
        quoted(spec.id_column).alias(spec.id_column), churn(*features).alias(PROBABILITY)
    )


def score_on_pandas(
    frame: pd.DataFrame, model_uri: str, spec: Spec, tracking_uri: str
) -> pd.DataFrame:
    """(entity id, ``probability``) for every row of a validated pandas ``frame``."""
    import mlflow.pyfunc

    with _tracking(tracking_uri):
        model = mlflow.pyfunc.load_model(model_uri)
    out = model.predict(frame[list(spec.feature_names)])
    return pd.DataFrame(
        {spec.id_column: frame[spec.id_column].to_numpy(), PROBABILITY: pd.Series(out).to_numpy()}
    )
