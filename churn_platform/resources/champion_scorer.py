"""The champion of a model, loaded once to score a week: batch and as a model server would.

``ChampionScorer.load(registry)`` reads which version the ``champion`` alias points at now
and loads that version (by number, so a move of the alias mid-run mixes nothing) twice:

* the batch path: the registered model's pyfunc (``mlflow.pyfunc``, P(churn) per row; the
  function ``spark_udf`` wraps), on the validated frame;
* the serving path: the model server's own code (``serving.model_server.loading.load_model``
  verifies the skops artefact against its registered digest; the records go through the
  server's ``InputSchema`` as JSON, as a client sends them, and ``scoring.probabilities``).

The weekly scores' parity check compares the two on a sample. On the Spark engine
(``CHURN_ENGINE=spark``) ``score_spark`` runs the same version as ``mlflow.pyfunc.spark_udf``
over the Spark frame (``resources.spark_scoring.score_on_spark``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from churn_platform.core.records import CHAMPION
from churn_platform.core.scores_step import ScoresError
from churn_platform.core.spec import Spec
from churn_platform.resources.mlflow_registry import MlflowRegistry, _fluent_store
from churn_platform.serving.integration import records
from churn_platform.serving.model_server.loading import load_model
from churn_platform.serving.model_server.schema import InputSchema
from churn_platform.serving.model_server.scoring import probabilities

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkFrame


@dataclass(frozen=True, eq=False)
class ChampionScorer:
    """One registered version ready to score (``core.scores_step.Scorer``)."""

    version: str
    spec: Spec
    model_uri: str
    pyfunc: Any
    pipeline: Any
    schema: InputSchema
    tracking_uri: str

    @classmethod
    def load(cls, registry: MlflowRegistry) -> ChampionScorer:
        """The version ``champion`` points at now; ``ScoresError`` when there is none."""
        version = registry.alias_version(CHAMPION)
        if version is None:
            raise ScoresError(
                f"registered model {registry.model_name!r} has no {CHAMPION!r} alias in "
                f"{registry.uri()}: release a model first (python -m churn_platform run); "
                "nothing is scored"
            )
        import mlflow.pyfunc

        uri = registry.model_uri(version)
        with _fluent_store(registry.uri()):
            pyfunc = mlflow.pyfunc.load_model(uri)
            pipeline, schema = load_model(uri, registry.uri())
        spec = registry.spec_of_version(version)
        return cls(version, spec, uri, pyfunc, pipeline, schema, registry.uri())

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """P(churn) per row through the registered model's pyfunc."""
        out = self.pyfunc.predict(frame[list(self.spec.feature_names)])
        return np.asarray(pd.Series(out).to_numpy(), dtype=float)

    def score_spark(self, frame: SparkFrame) -> SparkFrame:
        """(entity id, ``probability``) of every row of a Spark frame, through ``spark_udf`` of
        the same version (``core.scores_step.SparkScorer``)."""
        from churn_platform.resources.spark_scoring import score_on_spark

        session = frame.sparkSession
        return score_on_spark(session, frame, self.model_uri, self.spec, self.tracking_uri)

    def score_as_served(self, frame: pd.DataFrame) -> np.ndarray:
        """P(churn) per row sent as JSON records through the model server's schema and
        scoring code."""
        values = self.schema.check(records(frame, self.spec))
        return probabilities(self.pipeline.predict_proba, self.schema, values)
