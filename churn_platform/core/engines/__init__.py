"""The engines of the heavy data steps: pandas in this process (the default) or Spark.

``CHURN_ENGINE`` (``pandas`` | ``spark``) picks one; ``CHURN_SPARK_MASTER`` says where Spark
runs (``local[*]``, ``spark://host:7077``, ``k8s://https://<api-server>``). Both engines take
the same declared contract (``core.contract.contract_rules``: the same rule names, failing
counts and pass/fail) and the same mapping (``core.mapping``); the Spark side is
``spark_mapping`` (renames, value maps, blanks -> null, types), ``spark_contract`` (every rule
kind as Spark aggregates, in one pass over the data plus one for uniqueness) and
``spark_session`` (the session built from ``EngineConfig``).

``validation.validate(source, spec, config)`` is what a data asset calls: read the source (a DataFrame
or a CSV/Parquet path), map it, version it and evaluate the contract, on the configured
engine. Data versions differ between engines by design: the pandas engine hashes the rows
in order (``core.contract.data_version``), the Spark engine hashes the rows as a multiset
(``spark_contract.spark_data_version``: stable, independent of row order and partitioning).

This package's ``__init__`` loads only ``engine_config`` (the settings import it); the engines
load when used.
"""

from churn_platform.core.engines.engine_config import (
    ENGINE_VAR,
    ENGINES,
    EngineConfig,
    EngineError,
)

__all__ = ["ENGINES", "ENGINE_VAR", "EngineConfig", "EngineError"]
