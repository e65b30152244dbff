"""Every environment variable the platform reads, declared once and parsed in one place.

``SETTINGS`` is the table: name, type, default, description, accepted values, and whether the
value is a secret. ``get(name)`` reads and parses one variable *now* (at definitions load or
at tick time, never at import); a bad value raises ``SettingsError`` naming the variable, the
value and what is accepted. ``python -m churn_platform settings`` prints the table with the
values in effect and where each came from.

One variable picks the environment (``CHURN_ENV``: ``local`` by default, or ``kubernetes``);
one variable moves all local state (``CHURN_HOME``: ``./data`` locally, ``/var/lib/churn``
on Kubernetes, where the pods mount the shared volume).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from churn_platform.core.canary.config import SCHEMA_CHANGE_MODES
from churn_platform.core.drift_monitor import DriftSettings
from churn_platform.core.engines.engine_config import ENGINE_VAR, ENGINES, EngineConfig
from churn_platform.core.freshness_rules import FreshnessSettings
from churn_platform.core.performance_step import TRIGGERS, MonitorSettings
from churn_platform.core.scores import ScoresSettings
from churn_platform.core.synthetic import SyntheticSpec
from churn_platform.core.watchdog import WATCHDOG_INTERVAL_SECONDS
from churn_platform.core.weeks import SYNTHETIC_WEEKS, WeeksConfig
from churn_platform.setting_kinds import Setting, SettingsError, mask

if TYPE_CHECKING:
    from churn_platform.targets.kubernetes.settings import KubernetesSettings

ENV_VAR = "CHURN_ENV"
HOME_VAR = "CHURN_HOME"
STORAGE_VAR = "CHURN_STORAGE_URL"
REMOTE_SCHEMES = ("s3",)
ENVIRONMENTS = ("local", "kubernetes")
SOURCES = ("synthetic", "file", "sql")
MODEL_NAME = "churn_model"
# the Secret with the bucket's credentials in each serving namespace (deploy/k8s/storage.yaml)
STORAGE_SECRET = "churn-object-store"
HOME_DEFAULTS = {"local": "data", "kubernetes": "/var/lib/churn"}


def _home_default(environ: Mapping[str, str]) -> str:
    return HOME_DEFAULTS[get(ENV_VAR, environ)]


def _spec_default(name: str) -> Any:
    """A synthetic knob's default, from ``SyntheticSpec`` (written once, there)."""
    return next(f.default for f in fields(SyntheticSpec) if f.name == name)


def _port(name: str, description: str) -> Setting:
    return Setting(name, "int", 0, description, minimum=0, maximum=65535)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        ENV_VAR,
        "choice",
        "local",
        "which resources and executor: processes on this machine, or the cluster",
        choices=ENVIRONMENTS,
    ),
    Setting(
        HOME_VAR,
        "str",
        _home_default,
        "folder for all state: asset values, snapshots, reports, MLflow store, deployments "
        f"(default {HOME_DEFAULTS['local']} locally, {HOME_DEFAULTS['kubernetes']} on Kubernetes)",
    ),
    Setting(
        STORAGE_VAR,
        "str",
        "",
        "where every artefact goes (asset values, snapshots, reports, MLflow artefacts, "
        "inference logs): a folder or s3://bucket/prefix (default $CHURN_HOME); S3 credentials "
        "from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL(_S3), AWS_DEFAULT_REGION",
    ),
    Setting(
        "DAGSTER_HOME",
        "str",
        lambda environ: str(Path(get(HOME_VAR, environ)) / "dagster"),
        "the Dagster instance folder (python -m churn_platform run creates it)",
    ),
    Setting(
        "CHURN_SOURCE", "choice", "synthetic", "where snapshot rows come from", choices=SOURCES
    ),
    Setting(
        "CHURN_SOURCE_PATH",
        "str",
        "",
        "CSV/Parquet file, or a folder: of weekly files named by the week's Sunday "
        "(2026-11-15.parquet; each partition reads its week's), else its newest file is the "
        "snapshot (CHURN_SOURCE=file)",
    ),
    Setting(
        "CHURN_SOURCE_URL",
        "str",
        "",
        "SQLAlchemy URL of the source database (CHURN_SOURCE=sql)",
        secret=True,
    ),
    Setting("CHURN_SOURCE_TABLE", "str", "", "table to read (CHURN_SOURCE=sql)"),
    Setting("CHURN_SOURCE_QUERY", "str", "", "query to run instead of a table (CHURN_SOURCE=sql)"),
    Setting(
        "CHURN_PLATFORM",
        "str",
        "",
        "YAML platform file listing several models (name, spec, source, ports, schedule); "
        "empty: one model, churn, configured by the CHURN_* variables below",
    ),
    Setting(
        "CHURN_SPEC",
        "str",
        "",
        "YAML table spec (columns, features, checks, slices, drift); empty: the shipped "
        "churn_platform/specs/churn.yaml",
    ),
    Setting(
        "CHURN_MAPPING_FILE",
        "str",
        "",
        "YAML/JSON column mapping: columns, values, keep_extra_columns",
    ),
    Setting(
        ENGINE_VAR,
        "choice",
        "pandas",
        "engine of churn_scores' mapping, data version, contract and batch scoring: pandas "
        "in this process, or Spark at CHURN_SPARK_MASTER (the other data assets stay pandas)",
        choices=ENGINES,
    ),
    Setting(
        "CHURN_SPARK_MASTER",
        "str",
        "local[*]",
        "Spark master URL (CHURN_ENGINE=spark): local[*], spark://host:7077, "
        "k8s://https://<api-server>:443, yarn",
    ),
    Setting(
        "CHURN_SPARK_DRIVER_MEMORY",
        "str",
        "2g",
        "spark.driver.memory of the Spark session (CHURN_ENGINE=spark), e.g. 2g, 3500m",
    ),
    Setting(
        "CHURN_SYNTHETIC_ROWS",
        "int",
        _spec_default("n_rows"),
        "rows of the synthetic snapshot",
        minimum=1,
    ),
    Setting(
        "CHURN_SYNTHETIC_SEED",
        "int",
        _spec_default("seed"),
        "seed of the synthetic generator",
        minimum=0,
    ),
    Setting(
        "CHURN_SYNTHETIC_SPEND_SHIFT",
        "float",
        _spec_default("spend_shift"),
        "added to monthly spend of synthetic rows (simulates drift)",
    ),
    Setting(
        "CHURN_SYNTHETIC_CONCEPT_DRIFT",
        "float",
        _spec_default("concept_drift"),
        "turns the synthetic churn mechanism in snapshots and outcomes (1 reverses the "
        "contract and tenure effects); feature distributions do not move",
        minimum=0,
        maximum=1,
    ),
    Setting(
        "CHURN_SYNTHETIC_AS_OF",
        "date",
        "",
        "pins the synthetic snapshot to the week holding this day (empty: each snapshot draws "
        f"the week after the previous one on this Dagster instance; the first is week 0, "
        f"{_spec_default('as_of')})",
    ),
    _port("CHURN_STAGING_PORT", "local staging router port (0 = pick a free one once)"),
    _port("CHURN_PRODUCTION_PORT", "local production router port (0 = pick a free one once)"),
    Setting(
        "CHURN_AUTO_RELEASE",
        "bool",
        False,
        "the retraining job (schedule, drift sensor) also runs the production canary",
    ),
    Setting(
        "CHURN_SCHEMA_CHANGE",
        "choice",
        "refuse",
        "a candidate requiring request fields the champion's clients do not send: refuse "
        "(release nothing, name the fields) or cutover (shadow, then 100% at once); the "
        "default of production_deployment's schema_change",
        choices=SCHEMA_CHANGE_MODES,
    ),
    Setting(
        "CHURN_PSI_THRESHOLD",
        "float",
        DriftSettings.threshold,
        "the drift sensor requests retraining when a feature's PSI exceeds this",
        minimum=0,
        exclusive_minimum=True,
    ),
    Setting(
        "CHURN_DRIFT_MIN_ROWS",
        "int",
        DriftSettings.min_rows,
        "smallest window (rows) the drift sensor judges",
        minimum=1,
    ),
    Setting(
        "CHURN_PERFORMANCE_START",
        "date",
        MonitorSettings.start_date,
        "first prediction week of model_performance (a Sunday; weeks run Sunday-Saturday UTC)",
    ),
    Setting(
        "CHURN_PERFORMANCE_AUC_TOLERANCE",
        "float",
        MonitorSettings.auc_tolerance,
        "realized AUC check and performance_sensor: the drop below the holdout AUC tolerated",
        minimum=0,
        maximum=1,
    ),
    Setting(
        "CHURN_PERFORMANCE_MAX_CALIBRATION_ERROR",
        "float",
        MonitorSettings.max_calibration_error,
        "model_performance's calibration check: the largest expected calibration error",
        minimum=0,
        maximum=1,
    ),
    Setting(
        "CHURN_PERFORMANCE_MIN_MATCH_RATE",
        "float",
        MonitorSettings.min_match_rate,
        "model_performance's match-rate check: the smallest share of predictions with an outcome",
        minimum=0,
        maximum=1,
    ),
    Setting(
        "CHURN_WEEKS_START",
        "date",
        WeeksConfig.start_date,
        "first week of churn_snapshot's and validated_churn_data's weekly partitions (a "
        "Sunday; weeks run Sunday-Saturday UTC); the synthetic world's calendar is the "
        f"{SYNTHETIC_WEEKS} weeks from it",
    ),
    Setting(
        "CHURN_TRAINING_WEEKS",
        "int",
        WeeksConfig.training_weeks,
        "challenger_model trains on this many recent validated weeks, ending at the run's week",
        minimum=1,
    ),
    Setting(
        "CHURN_SCORES_START",
        "date",
        ScoresSettings.start_date,
        "first week of churn_scores' weekly partitions (a Sunday; weeks run Sunday-Saturday UTC)",
    ),
    Setting(
        "CHURN_SCORES_URL",
        "str",
        "",
        "SQLAlchemy URL of a PostgreSQL or SQLite database: churn_scores also upserts each "
        "week into table <model>_scores there (empty: Parquet only)",
        secret=True,
    ),
    Setting(
        "CHURN_SCORES_QUERY",
        "str",
        "",
        "CHURN_SOURCE=sql: the query churn_snapshot and churn_scores run per week, with "
        ":week_start and :week_end (dates, [start, end)) as parameters",
    ),
    Setting(
        "CHURN_PERFORMANCE_TRIGGER",
        "choice",
        MonitorSettings.trigger,
        "what performance_sensor judges: realized (matured weeks) or estimate (CBPE, earlier, "
        "blind to concept drift)",
        choices=TRIGGERS,
    ),
    Setting(
        "CHURN_SNAPSHOT_WARN_DAYS",
        "float",
        FreshnessSettings.snapshot_warn_days,
        "churn_snapshot's freshness warns when its newest materialisation is older (days)",
        minimum=0,
        exclusive_minimum=True,
    ),
    Setting(
        "CHURN_SNAPSHOT_FAIL_DAYS",
        "float",
        FreshnessSettings.snapshot_fail_days,
        "churn_snapshot's freshness fails, and notifies, when older (days)",
        minimum=0,
        exclusive_minimum=True,
    ),
    Setting(
        "CHURN_CHAMPION_WARN_DAYS",
        "float",
        FreshnessSettings.champion_warn_days,
        "the champion's freshness (production_deployment) warns when older (days)",
        minimum=0,
        exclusive_minimum=True,
    ),
    Setting(
        "CHURN_CHAMPION_FAIL_DAYS",
        "float",
        FreshnessSettings.champion_fail_days,
        "the champion's freshness fails, and notifies, when older (days)",
        minimum=0,
        exclusive_minimum=True,
    ),
    Setting(
        "CHURN_WATCHDOG_INTERVAL_SECONDS",
        "int",
        WATCHDOG_INTERVAL_SECONDS,
        "how often serving_watchdog_sensor checks each deployment (seconds; at most 60)",
        minimum=1,
        maximum=60,
    ),
    Setting(
        "CHURN_FAULT_RATE",
        "float",
        0.0,
        "share of requests a model server answers with an error (fault injection)",
        minimum=0,
        maximum=1,
    ),
    Setting(
        "CHURN_FAULT_SEED", "int", None, "seed of the fault sequence (unset: random)", minimum=0
    ),
    Setting(
        "CHURN_FAULT_MODE",
        "choice",
        "error",
        "what an injected fault does: 'error' answers 500, 'shuffle' answers other records' "
        "scores (no error, order lost)",
        choices=("error", "shuffle"),
    ),
    Setting(
        "CHURN_INFERENCE_LOG",
        "str",
        "",
        "a model server's inference log file (default $CHURN_HOME/inference_log/<version>.jsonl)",
    ),
    Setting(
        "MLFLOW_TRACKING_URI",
        "str",
        "",
        "MLflow store (default sqlite:///$CHURN_HOME/mlflow/mlflow.db)",
        secret=True,
    ),
    Setting(
        "PROMETHEUS_URL",
        "str",
        "",
        "canary metrics from Prometheus (unset: scrape the servers' /metrics)",
        secret=True,
    ),
    Setting(
        "CHURN_MODEL_SERVER_IMAGE",
        "str",
        "",
        "model-server image (required on Kubernetes)",
    ),
    Setting(
        "CHURN_K8S_NAMESPACE",
        "str",
        "churn-{environment}",
        "namespace of an environment's model servers ({environment} is replaced)",
    ),
    Setting("CHURN_GATEWAY_NAME", "str", "churn-gateway", "Gateway API gateway of the routes"),
    Setting(
        "CHURN_GATEWAY_NAMESPACE",
        "str",
        "",
        "the gateway's namespace (empty: the route's own)",
    ),
    Setting(
        "CHURN_WEBHOOK_URL",
        "str",
        "",
        "webhook that receives a JSON message per rollback, failed blocking check and drift "
        "episode (unset: none)",
        secret=True,
    ),
    Setting(
        "CHURN_SLACK_TOKEN",
        "str",
        "",
        "Slack bot token: the same messages to CHURN_SLACK_CHANNEL (unset: no Slack)",
        secret=True,
    ),
    Setting("CHURN_SLACK_CHANNEL", "str", "#churn-platform", "Slack channel of the notifications"),
    Setting(
        "CHURN_DAGSTER_URL",
        "str",
        "http://127.0.0.1:3000",
        "the Dagster UI's address, for the run links in notifications",
    ),
    Setting(
        "CHURN_MAX_BODY_BYTES",
        "int",
        10_000_000,
        "largest request body a model server or router reads; bigger ones get 413 unread",
        minimum=1024,
    ),
    Setting(
        "CHURN_BODY_READ_TIMEOUT_SECONDS",
        "float",
        30.0,
        "seconds a model server or router waits for a request body; then 408 and the "
        "connection closed (a stalled client holds nothing longer)",
        minimum=0.0,
        exclusive_minimum=True,
    ),
    Setting(
        "CHURN_SERVER_LOG_MAX_BYTES",
        "int",
        10_000_000,
        "a model server's or router's own log file is rotated (<file>.1, .2, ...) at this size",
        minimum=1024,
    ),
    Setting(
        "CHURN_SERVER_LOG_BACKUPS",
        "int",
        3,
        "rotated log files kept per model server or router (older ones are deleted)",
        minimum=1,
    ),
    Setting(
        "CHURN_ROUTER_ADMIN_TOKEN",
        "str",
        "",
        "bearer token a router requires on PUT /-/weights (LocalProcessTarget generates one "
        "per environment into its state file; empty: admin changes refused)",
        secret=True,
    ),
    Setting(
        "CHURN_INFERENCE_LOG_MAX_BYTES",
        "int",
        100_000_000,
        "an inference log file is rotated (<file>.1, .2, ...) once it reaches this size",
        minimum=1024,
    ),
    Setting(
        "CHURN_INFERENCE_LOG_BACKUPS",
        "int",
        5,
        "rotated inference log files kept per version (older ones are deleted)",
        minimum=0,
    ),
    Setting(
        "GIT_COMMIT",
        "str",
        "",
        "code version recorded with a model (empty: git rev-parse HEAD)",
    ),
)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def get(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The parsed value of setting ``name`` from ``environ`` (default: ``os.environ``, now)."""
    environ = os.environ if environ is None else environ
    setting = BY_NAME[name]
    raw = environ.get(name)
    if raw is None:
        return setting.default_value(environ)
    value = setting.parse(raw)
    if setting.kind in ("str", "date") and value == "":
        return setting.default_value(environ)
    return value


def source(name: str, environ: Mapping[str, str] | None = None) -> str:
    """``environment`` when the variable is set (non-empty text), else ``default``."""
    environ = os.environ if environ is None else environ
    raw = environ.get(name)
    if raw is None or (BY_NAME[name].kind in ("str", "date") and not raw.strip()):
        return "default"
    return "environment"


def describe(environ: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """Every setting with its value (secrets masked), source and description; a bad value is
    shown with its error instead of stopping the listing."""
    environ = os.environ if environ is None else environ
    rows = []
    for setting in SETTINGS:
        try:
            value: Any = get(setting.name, environ)
            error = ""
        except SettingsError as exc:
            value, error = environ.get(setting.name, ""), str(exc)
        shown = "" if value is None else str(value)
        if setting.secret:
            shown = mask(shown)
        rows.append(
            {
                "name": setting.name,
                "value": shown,
                "source": source(setting.name, environ),
                "accepted": setting.accepted(),
                "description": setting.description,
                "error": error,
            }
        )
    return rows


def environment() -> str:
    """The environment name from ``CHURN_ENV`` (default ``local``), validated."""
    return str(get(ENV_VAR))


def home_path(environ: Mapping[str, str] | None = None) -> Path:
    """``CHURN_HOME`` as an absolute path, not created (the Kubernetes executor only names it)."""
    return Path(get(HOME_VAR, environ)).expanduser().resolve()


def churn_home() -> Path:
    """The folder for local state (snapshots, MLflow store, deployments); created on demand."""
    home = home_path()
    home.mkdir(parents=True, exist_ok=True)
    return home


def default_mlflow_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else a SQLite store under ``CHURN_HOME``."""
    uri = str(get("MLFLOW_TRACKING_URI"))
    if uri:
        return uri
    folder = churn_home() / "mlflow"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def storage_url(environ: Mapping[str, str] | None = None) -> str:
    """``CHURN_STORAGE_URL`` (an ``s3://`` URL or a folder), default ``CHURN_HOME``; a URL of a
    scheme the platform cannot write is a ``SettingsError``. Never ends with ``/``."""
    raw = str(get(STORAGE_VAR, environ))
    if not raw:
        return str(home_path(environ))
    scheme = urlsplit(raw).scheme
    if scheme == "file":
        return str(Path(urlsplit(raw).path))
    if scheme in REMOTE_SCHEMES:
        if not urlsplit(raw).netloc:
            raise SettingsError(
                f"{STORAGE_VAR}={raw!r} names no bucket; set s3://<bucket>/<prefix>"
            )
        return raw.rstrip("/")
    if len(scheme) > 1:  # one letter: a Windows drive
        raise SettingsError(
            f"{STORAGE_VAR}={raw!r}: the scheme {scheme!r} is not supported; set "
            "s3://<bucket>/<prefix>, a folder path, or unset it for $CHURN_HOME"
        )
    return str(Path(raw).expanduser().resolve())


def storage_is_remote(environ: Mapping[str, str] | None = None) -> bool:
    """Whether artefacts go to an object store (``CHURN_STORAGE_URL=s3://...``)."""
    return urlsplit(storage_url(environ)).scheme in REMOTE_SCHEMES


def drift_settings(environ: Mapping[str, str] | None = None) -> DriftSettings:
    """The drift sensor's threshold and minimum window, read now (each tick)."""
    return DriftSettings(
        threshold=float(get("CHURN_PSI_THRESHOLD", environ)),
        min_rows=int(get("CHURN_DRIFT_MIN_ROWS", environ)),
    )


def performance_settings(environ: Mapping[str, str] | None = None) -> MonitorSettings:
    """How model_performance and performance_sensor judge (``CHURN_PERFORMANCE_*``)."""
    return MonitorSettings(
        start_date=str(get("CHURN_PERFORMANCE_START", environ) or MonitorSettings.start_date),
        auc_tolerance=float(get("CHURN_PERFORMANCE_AUC_TOLERANCE", environ)),
        max_calibration_error=float(get("CHURN_PERFORMANCE_MAX_CALIBRATION_ERROR", environ)),
        min_match_rate=float(get("CHURN_PERFORMANCE_MIN_MATCH_RATE", environ)),
        trigger=str(get("CHURN_PERFORMANCE_TRIGGER", environ)),
    )


def freshness_settings(environ: Mapping[str, str] | None = None) -> FreshnessSettings:
    """The freshness windows of the snapshot and the champion (``CHURN_*_WARN_DAYS``,
    ``CHURN_*_FAIL_DAYS``); a warning window not shorter than its failure window is refused."""
    windows = FreshnessSettings(
        snapshot_warn_days=float(get("CHURN_SNAPSHOT_WARN_DAYS", environ)),
        snapshot_fail_days=float(get("CHURN_SNAPSHOT_FAIL_DAYS", environ)),
        champion_warn_days=float(get("CHURN_CHAMPION_WARN_DAYS", environ)),
        champion_fail_days=float(get("CHURN_CHAMPION_FAIL_DAYS", environ)),
    )
    if windows.problems():
        raise SettingsError(
            "; ".join(windows.problems()) + ": set CHURN_*_WARN_DAYS below CHURN_*_FAIL_DAYS"
        )
    return windows


def engine_config(environ: Mapping[str, str] | None = None) -> EngineConfig:
    """The data engine (``CHURN_ENGINE``) and its Spark session settings, read now."""
    return EngineConfig(
        engine=str(get(ENGINE_VAR, environ)),
        spark_master=str(get("CHURN_SPARK_MASTER", environ)),
        spark_driver_memory=str(get("CHURN_SPARK_DRIVER_MEMORY", environ)),
    )


def auto_release(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the retraining job also releases to production (``CHURN_AUTO_RELEASE``)."""
    return bool(get("CHURN_AUTO_RELEASE", environ))


def kubernetes_settings_from_env(environ: Mapping[str, str] | None = None) -> KubernetesSettings:
    """The Kubernetes target's settings from the variables the Helm values set.

    ``CHURN_MODEL_SERVER_IMAGE``, ``CHURN_K8S_NAMESPACE``, ``CHURN_GATEWAY_NAME``,
    ``CHURN_GATEWAY_NAMESPACE``, ``MLFLOW_TRACKING_URI``; inside a pod
    (``KUBERNETES_SERVICE_HOST`` set) the in-cluster service account is used. With
    artefacts on an object store the model servers get ``CHURN_STORAGE_URL`` and the
    bucket's credentials Secret, so they write their inference logs where the drift
    sensor reads them.
    """
    # imported here: the local default never loads the kubernetes client
    from churn_platform.targets.kubernetes.settings import KubernetesSettings

    environ = os.environ if environ is None else environ
    remote = storage_is_remote(environ)
    return KubernetesSettings(
        image=str(get("CHURN_MODEL_SERVER_IMAGE", environ)),
        tracking_uri=str(get("MLFLOW_TRACKING_URI", environ)),
        namespace=str(get("CHURN_K8S_NAMESPACE", environ)),
        gateway_name=str(get("CHURN_GATEWAY_NAME", environ)),
        gateway_namespace=str(get("CHURN_GATEWAY_NAMESPACE", environ)),
        # Kubernetes' own variable inside every pod, not a platform setting
        in_cluster=bool(environ.get("KUBERNETES_SERVICE_HOST")),
        extra_env={STORAGE_VAR: storage_url(environ)} if remote else {},
        storage_secret=STORAGE_SECRET if remote else "",
    )
