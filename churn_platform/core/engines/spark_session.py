"""The Spark session of the Spark engine, built from ``EngineConfig`` (never from the env)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from churn_platform.core.engines.engine_config import EngineConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def spark_session(config: EngineConfig) -> SparkSession:
    """A session at ``config.spark_master`` (reused when one is running in this process).

    Timestamps are read and shown in UTC (as the pandas engine's dates), the UI is off, and
    Arrow moves frames between Spark and pandas. ``spark_driver_memory`` applies when this
    call starts the JVM (a running session keeps its own). On Kubernetes, the master is
    ``k8s://https://<api-server>:443`` and ``config.spark_conf`` carries
    ``spark.kubernetes.container.image`` and the executor settings.
    """
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master(config.spark_master)
        .appName(config.app_name)
        .config("spark.driver.memory", config.spark_driver_memory)
        .config("spark.sql.shuffle.partitions", str(config.shuffle_partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    for key, value in config.spark_conf:
        builder = builder.config(key, value)
    return builder.getOrCreate()
