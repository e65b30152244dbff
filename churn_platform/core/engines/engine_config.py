"""Which engine runs the heavy data steps (``CHURN_ENGINE``) and how its Spark session is built."""

from __future__ import annotations

from dataclasses import dataclass, field

ENGINE_VAR = "CHURN_ENGINE"
ENGINES: tuple[str, ...] = ("pandas", "spark")


class EngineError(ValueError):
    """An engine cannot run what it was asked to; the message names the setting or rule."""


@dataclass(frozen=True)
class EngineConfig:
    """Which engine runs the data steps, and how its Spark session is built.

    ``engine``: ``pandas`` (default) or ``spark`` (``CHURN_ENGINE``). ``spark_master``: the
    master URL (``CHURN_SPARK_MASTER``); ``spark_driver_memory`` (``CHURN_SPARK_DRIVER_MEMORY``);
    ``shuffle_partitions``: ``spark.sql.shuffle.partitions``; ``spark_conf``: further
    ``spark.*`` settings (a cluster's image, executors, ...).
    """

    engine: str = "pandas"
    spark_master: str = "local[*]"
    spark_driver_memory: str = "2g"
    shuffle_partitions: int = 8
    app_name: str = "churn-platform"
    spark_conf: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise EngineError(
                f"{ENGINE_VAR}={self.engine!r} is not a known engine; set {ENGINE_VAR} to one "
                f"of {', '.join(ENGINES)} (default pandas)"
            )
        if not self.spark_master.strip():
            raise EngineError("CHURN_SPARK_MASTER is empty; set a master URL such as local[*]")
        if self.shuffle_partitions < 1:
            raise EngineError("EngineConfig.shuffle_partitions must be >= 1")
