"""``validate``: read, map, version and check a snapshot on the configured engine.

The pandas engine is ``core.mapping`` + ``core.contract`` in this process; the Spark engine is
``spark_mapping`` + ``spark_contract`` on the session ``spark_session`` builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from churn_platform.core.contract import ContractConfig, RuleResult, data_version
from churn_platform.core.contract import evaluate_contract as evaluate_on_pandas
from churn_platform.core.engines.engine_config import EngineConfig, EngineError
from churn_platform.core.mapping import ColumnMapping, DataSourceError, apply_mapping
from churn_platform.core.spec import Spec

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

PANDAS_VERSION_KIND = "sha256 of the rows in order (core.contract.data_version)"
SPARK_VERSION_KIND = "sha256 of the row multiset (xxhash64 per row; order-independent)"


@dataclass(frozen=True, eq=False)
class Validation:
    """What ``validate`` found: the contract results, the data version and the mapped rows.

    ``frame`` is a pandas DataFrame (pandas engine) or a Spark DataFrame (Spark engine) in the
    spec's columns and types; ``summary`` is the mapping's account (``MappedFrame.summary``
    shape); ``version_kind`` says how ``version`` was computed (it differs between engines).
    """

    engine: str
    results: list[RuleResult]
    version: str
    version_kind: str
    rows: int
    frame: Any
    summary: dict[str, Any]

    @property
    def blocking(self) -> list[RuleResult]:
        """Failed rules of severity ERROR."""
        return [r for r in self.results if r.blocking]


def validate(
    source: Any,
    spec: Spec,
    config: EngineConfig,
    *,
    mapping: ColumnMapping | dict[str, Any] | None = None,
    contract: ContractConfig | None = None,
    spark: SparkSession | None = None,
) -> Validation:
    """Map, version and check ``source`` against ``spec``'s contract on ``config.engine``.

    ``source``: a pandas DataFrame, a Spark DataFrame (Spark engine), or the path of a CSV
    (read as text, as ``FileSource`` does) or Parquet file. ``spark``: a session to reuse
    (default: one built from ``config`` by ``spark_session.spark_session``). Missing spec
    columns are reported by the contract (``required_columns_present``), not raised.
    """
    if config.engine == "pandas":
        return _validate_pandas(source, spec, mapping, contract)
    from churn_platform.core.engines import spark_contract, spark_mapping, spark_session

    session = spark if spark is not None else spark_session.spark_session(config)
    raw = spark_mapping.read_source(session, source)
    mapped = spark_mapping.map_on_spark(raw, mapping, spec=spec, required=())
    checked = spark_contract.evaluate_on_spark(mapped, contract, spec=spec)
    return Validation(
        "spark",
        checked.results,
        checked.version,
        SPARK_VERSION_KIND,
        checked.rows,
        mapped.frame,
        checked.summary,
    )


def _validate_pandas(
    source: Any,
    spec: Spec,
    mapping: ColumnMapping | dict[str, Any] | None,
    contract: ContractConfig | None,
) -> Validation:
    raw = read_pandas(source)
    mapped = apply_mapping(raw, mapping, required=(), spec=spec)
    results = evaluate_on_pandas(mapped, contract, spec=spec)
    version = data_version(mapped)
    return Validation(
        "pandas",
        results,
        version,
        PANDAS_VERSION_KIND,
        len(mapped.frame),
        mapped.frame,
        mapped.summary(),
    )


def read_pandas(source: Any) -> pd.DataFrame:
    """``source`` as a pandas frame: as is, or a CSV read as text / a Parquet file."""
    if isinstance(source, pd.DataFrame):
        return source
    if not isinstance(source, str | Path):
        raise EngineError(
            f"the pandas engine reads a DataFrame or a file path, not {type(source).__name__}; "
            "set CHURN_ENGINE=spark for a Spark DataFrame"
        )
    path = Path(source)
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise DataSourceError(f"{path}: the engines read .csv or .parquet files; convert it")
