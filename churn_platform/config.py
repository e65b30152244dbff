"""The one place the environment and the platform file are read: a frozen configuration.

``load_config()`` parses every setting of ``churn_platform.settings`` (the table of environment
variables) and, when ``CHURN_PLATFORM`` names one, the platform file listing several models,
into a ``PlatformConfig``. Everything else receives what it needs from it: resources at
construction, definitions per model (``ModelConfig``), core functions the spec as an argument.

Without a platform file the platform is one model, ``churn``, configured by the ``CHURN_*``
variables exactly as before (unprefixed asset keys, registered model ``churn_model``, state in
``$CHURN_HOME/deployments``), so existing homes keep working. A platform file::

    models:
      - name: churn
        spec: churn                  # a bare name: a spec shipped in the package
        source: {kind: synthetic}
      - name: accounts
        spec: specs/accounts.yaml    # a path: relative to the platform file
        source: {kind: file, path: data/accounts.csv}
        ports: {staging: 8101, production: 8102}
        schedule: "0 3 * * 1"

gives each model its own asset key prefix and group (its name), registered model
(``<name>_model``), aliases, routes and router ports, deployment state
(``$CHURN_HOME/models/<name>/deployments``), jobs, schedule and sensors (named
``<name>_...``). Errors name the file, the model, the key and the fix.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from churn_platform import settings
from churn_platform.core.drift_monitor import DriftSettings
from churn_platform.core.engines.engine_config import EngineConfig
from churn_platform.core.freshness_rules import FreshnessSettings
from churn_platform.core.performance_step import MonitorSettings
from churn_platform.core.scores import ScoresSettings
from churn_platform.core.spec import DEFAULT_SPEC_PATH, Spec, SpecError, load_spec
from churn_platform.core.weeks import WeeksConfig
from churn_platform.settings import SettingsError

PLATFORM_VAR = "CHURN_PLATFORM"
DEFAULT_MODEL = "churn"
DEFAULT_SCHEDULE = "0 2 * * 1"  # Monday 02:00 UTC
SHIPPED_SPECS = DEFAULT_SPEC_PATH.parent
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_MODEL_KEYS = {"name", "spec", "source", "ports", "schedule", "registered_model", "mapping"}
_SOURCE_KEYS = {
    "synthetic": {"kind", "rows", "seed", "spend_shift", "concept_drift", "as_of"},
    "file": {"kind", "path"},
    "sql": {"kind", "url_env", "table", "query", "scores_query"},
}


@dataclass(frozen=True)
class SourceConfig:
    """Where one model's snapshot rows come from.

    ``kind`` is ``synthetic``, ``file`` or ``sql``. ``url_env`` names the environment variable
    holding a SQL source's URL (the UI shows the name, never the URL). ``mapping`` is an
    explicit column mapping (``columns``, ``values``, ``keep_extra_columns``) merged over the
    spec's. The synthetic knobs are ``rows``, ``seed``, ``spend_shift``, ``concept_drift`` and
    ``as_of``. ``scores_query``: a SQL source's weekly query for ``churn_scores``
    (``:week_start``, ``:week_end``).
    """

    kind: str = "synthetic"
    path: str = ""
    url_env: str = ""
    table: str = ""
    query: str = ""
    mapping: Mapping[str, Any] = field(default_factory=dict)
    scores_query: str = ""
    rows: int = 20_000
    seed: int = 7
    spend_shift: float = 0.0
    concept_drift: float = 0.0
    as_of: str = ""


@dataclass(frozen=True)
class ModelConfig:
    """One model of the platform: its name, spec, source, schedule and router ports.

    ``key_prefix`` is empty for the single model of a platform without a platform file (the
    asset keys, job and sensor names and state paths of earlier releases), else ``(name,)``.
    """

    name: str
    spec: Spec
    spec_path: str
    source: SourceConfig
    key_prefix: tuple[str, ...] = ()
    registered_model: str = settings.MODEL_NAME
    staging_port: int = 0
    production_port: int = 0
    schedule: str = DEFAULT_SCHEDULE
    schema_change: str = "refuse"  # CHURN_SCHEMA_CHANGE: production_deployment's default
    weeks: WeeksConfig = field(default_factory=WeeksConfig)  # CHURN_WEEKS_START, _TRAINING_WEEKS
    engine: EngineConfig = field(default_factory=EngineConfig)  # CHURN_ENGINE: its data steps

    @property
    def own_clock(self) -> bool:
        """Whether the model's source keeps its own calendar (the synthetic world): a run
        then snapshots the week after the newest one, not the week of today."""
        return self.source.kind == "synthetic"

    @property
    def group(self) -> str:
        """The asset group in the UI: the model's name."""
        return self.name

    @property
    def prefixed(self) -> bool:
        """Whether asset keys, jobs, sensors and resources carry the model's name."""
        return bool(self.key_prefix)

    def key(self, asset: str) -> tuple[str, ...]:
        """The asset key path of ``asset`` for this model."""
        return (*self.key_prefix, asset)

    def named(self, base: str) -> str:
        """A job, schedule or sensor name for this model: ``base``, or ``<name>_<base>``."""
        return f"{self.name}_{base}" if self.prefixed else base

    def job(self, base: str) -> str:
        """A job name of this model: ``<name>_<base>`` (``churn_end_to_end`` for the default)."""
        return f"{self.name}_{base}"

    def op(self, asset: str) -> str:
        """The op name of ``asset`` (run config's ``ops:`` key): its key path joined by ``__``."""
        return "__".join(self.key(asset))

    def resource_key(self, base: str) -> str:
        """The resource key of this model's ``base`` resource (data source, registry, target)."""
        return f"{self.name}__{base}" if self.prefixed else base

    def state_dir(self, home: Path) -> Path:
        """Where this model's deployment state and process logs live under ``home``."""
        return (
            home / "models" / self.name / "deployments" if self.prefixed else home / "deployments"
        )

    @property
    def experiment_name(self) -> str:
        """The MLflow experiment of this model's training runs."""
        return self.name


@dataclass(frozen=True)
class NotifyConfig:
    """Where notifications go; the secrets stay in the environment (the flags say they are set)."""

    webhook_set: bool = False
    slack_set: bool = False
    slack_channel: str = "#churn-platform"
    ui_url: str = "http://127.0.0.1:3000"


@dataclass(frozen=True)
class PlatformConfig:
    """Everything the platform was told, parsed once: environment, folders, stores, settings,
    and the models it holds (``models``, in the platform file's order)."""

    environment: str
    home: Path
    dagster_home: Path
    storage_url: str
    storage_remote: bool
    mlflow_uri: str
    prometheus_url: str
    auto_release: bool
    drift: DriftSettings
    git_commit: str
    notify: NotifyConfig
    models: tuple[ModelConfig, ...]
    platform_file: str = ""
    kubernetes: Any = None  # KubernetesSettings on Kubernetes (its client loads only there)
    freshness: FreshnessSettings = field(default_factory=FreshnessSettings)
    performance: MonitorSettings = field(default_factory=MonitorSettings)
    watchdog_interval_seconds: int = settings.WATCHDOG_INTERVAL_SECONDS
    engine: EngineConfig = field(default_factory=EngineConfig)  # CHURN_ENGINE, CHURN_SPARK_*
    scores: ScoresSettings = field(default_factory=ScoresSettings)  # CHURN_SCORES_*

    def model(self, name: str | None = None) -> ModelConfig:
        """The model called ``name`` (default: the first); an unknown name lists the known."""
        if name is None:
            return self.models[0]
        for model in self.models:
            if model.name == name:
                return model
        where = self.platform_file or "the platform (no CHURN_PLATFORM file: one model)"
        raise SettingsError(
            f"no model {name!r} in {where}; use one of {[m.name for m in self.models]}"
        )

    @property
    def model_names(self) -> list[str]:
        """The models' names, in order."""
        return [m.name for m in self.models]

    def artifact_location(self) -> str:
        """Artifact root of a database-backed MLflow store: ``<storage>/mlflow`` on an object
        store, else a folder beside the local database (as a ``file:`` URI)."""
        if self.storage_remote:
            return self.storage_url + "/mlflow"
        return (Path(self.storage_url) / "mlflow" / "artifacts").as_uri()


def load_config(environ: Mapping[str, str] | None = None) -> PlatformConfig:
    """Parse the environment (default ``os.environ``, now) and the platform file it names.

    Raises ``SettingsError`` naming the variable, file, model or key and the fix.
    """
    env = os.environ if environ is None else environ
    home = settings.home_path(env)
    platform_file = str(settings.get(PLATFORM_VAR, env))
    models = (
        _models_from_file(Path(platform_file), env) if platform_file else (_model_from_env(env),)
    )
    schema_mode = str(settings.get("CHURN_SCHEMA_CHANGE", env))
    weeks = _weeks(env)
    engine = settings.engine_config(env)
    models = tuple(
        replace(m, schema_change=schema_mode, weeks=weeks, engine=engine) for m in models
    )
    return PlatformConfig(
        environment=str(settings.get(settings.ENV_VAR, env)),
        home=home,
        dagster_home=Path(settings.get("DAGSTER_HOME", env)).expanduser().resolve(),
        storage_url=settings.storage_url(env),
        storage_remote=settings.storage_is_remote(env),
        mlflow_uri=str(settings.get("MLFLOW_TRACKING_URI", env))
        or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        prometheus_url=str(settings.get("PROMETHEUS_URL", env)),
        auto_release=settings.auto_release(env),
        drift=settings.drift_settings(env),
        freshness=settings.freshness_settings(env),
        performance=settings.performance_settings(env),
        watchdog_interval_seconds=int(settings.get("CHURN_WATCHDOG_INTERVAL_SECONDS", env)),
        engine=engine,
        scores=ScoresSettings(
            start_date=str(settings.get("CHURN_SCORES_START", env) or ScoresSettings.start_date),
            database_set=bool(settings.get("CHURN_SCORES_URL", env)),
        ),
        git_commit=str(settings.get("GIT_COMMIT", env)),
        notify=NotifyConfig(
            webhook_set=bool(settings.get("CHURN_WEBHOOK_URL", env)),
            slack_set=bool(settings.get("CHURN_SLACK_TOKEN", env)),
            slack_channel=str(settings.get("CHURN_SLACK_CHANNEL", env)),
            ui_url=str(settings.get("CHURN_DAGSTER_URL", env)),
        ),
        models=models,
        platform_file=str(Path(platform_file).expanduser().resolve()) if platform_file else "",
        kubernetes=settings.kubernetes_settings_from_env(env)
        if settings.get(settings.ENV_VAR, env) == "kubernetes"
        else None,
    )


def _weeks(env: Mapping[str, str]) -> WeeksConfig:
    """The weekly calendar from ``CHURN_WEEKS_START`` and ``CHURN_TRAINING_WEEKS``."""
    try:
        return WeeksConfig(
            start_date=str(settings.get("CHURN_WEEKS_START", env) or WeeksConfig.start_date),
            training_weeks=int(settings.get("CHURN_TRAINING_WEEKS", env)),
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc


def _model_from_env(env: Mapping[str, str]) -> ModelConfig:
    """The single model of a platform without a platform file, from the ``CHURN_*`` settings."""
    spec_path = str(settings.get("CHURN_SPEC", env))
    try:
        spec = load_spec(spec_path or None)
    except SpecError as exc:
        where = f"CHURN_SPEC={spec_path!r}" if spec_path else "the shipped spec"
        raise SettingsError(f"{where}: {exc}") from None
    return ModelConfig(
        name=DEFAULT_MODEL,
        spec=spec,
        spec_path=spec_path or str(DEFAULT_SPEC_PATH),
        source=_source_from_env(env, spec),
        staging_port=int(settings.get("CHURN_STAGING_PORT", env)),
        production_port=int(settings.get("CHURN_PRODUCTION_PORT", env)),
    )


def _source_from_env(env: Mapping[str, str], spec: Spec) -> SourceConfig:
    """``CHURN_SOURCE`` and its settings, checked for what each kind needs."""
    kind = str(settings.get("CHURN_SOURCE", env))
    mapping_file = str(settings.get("CHURN_MAPPING_FILE", env))
    mapping = _mapping(mapping_file, spec, "CHURN_MAPPING_FILE") if mapping_file else {}
    if kind == "file" and not settings.get("CHURN_SOURCE_PATH", env):
        raise SettingsError(
            "CHURN_SOURCE=file needs CHURN_SOURCE_PATH: a CSV/Parquet file or a folder of them"
        )
    table, query = (str(settings.get(f"CHURN_SOURCE_{k}", env)) for k in ("TABLE", "QUERY"))
    if kind == "sql" and (not settings.get("CHURN_SOURCE_URL", env) or not (table or query)):
        raise SettingsError(
            "CHURN_SOURCE=sql needs CHURN_SOURCE_URL (a SQLAlchemy URL) and CHURN_SOURCE_TABLE "
            "or CHURN_SOURCE_QUERY"
        )
    return SourceConfig(
        kind=kind,
        path=str(settings.get("CHURN_SOURCE_PATH", env)),
        url_env="CHURN_SOURCE_URL" if kind == "sql" else "",
        table=table,
        query=query,
        mapping=mapping,
        scores_query=str(settings.get("CHURN_SCORES_QUERY", env)),
        rows=int(settings.get("CHURN_SYNTHETIC_ROWS", env)),
        seed=int(settings.get("CHURN_SYNTHETIC_SEED", env)),
        spend_shift=float(settings.get("CHURN_SYNTHETIC_SPEND_SHIFT", env)),
        concept_drift=float(settings.get("CHURN_SYNTHETIC_CONCEPT_DRIFT", env)),
        as_of=str(settings.get("CHURN_SYNTHETIC_AS_OF", env)),
    )


def _mapping(path: str, spec: Spec, where: str) -> dict[str, Any]:
    """A column mapping file, checked against ``spec`` (its names must be the spec's columns)."""
    from churn_platform.core.mapping import ColumnMapping, DataSourceError

    mapping = load_mapping_file(path, where)
    try:
        ColumnMapping.from_dict(mapping, spec=spec)
    except DataSourceError as exc:
        raise SettingsError(f"{where}={path!r}: {exc}") from None
    return mapping


def load_mapping_file(path: str, where: str = "CHURN_MAPPING_FILE") -> dict[str, Any]:
    """Read a column mapping (YAML or JSON) with keys ``columns``, ``values``,
    ``keep_extra_columns``; errors name ``where`` (the setting or platform-file key)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise SettingsError(
            f"{where}={path!r} does not exist; point it at a YAML or JSON mapping file"
        )
    text = file.read_text()
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SettingsError(f"{where}={path!r} is not valid YAML/JSON: {exc}") from exc
    data = data or {}
    unknown = sorted(set(data) - {"columns", "values", "keep_extra_columns"})
    if unknown:
        raise SettingsError(
            f"{where}={path!r} has unknown key(s) {unknown}; use columns, values, keep_extra_columns"
        )
    values = {
        col: {str(k): str(v) for k, v in m.items()} for col, m in (data.get("values") or {}).items()
    }
    return {
        "columns": {str(k): str(v) for k, v in (data.get("columns") or {}).items()},
        "values": values,
        "keep_extra_columns": bool(data.get("keep_extra_columns", False)),
    }


def _models_from_file(path: Path, env: Mapping[str, str]) -> tuple[ModelConfig, ...]:
    """The models a platform file lists, each checked; names are unique."""
    where = f"{PLATFORM_VAR}={str(path)!r}"
    try:
        data = yaml.safe_load(path.expanduser().read_text())
    except OSError as exc:
        raise SettingsError(
            f"{where} cannot be read ({exc.strerror}); point it at a YAML platform file "
            "or unset it for the single churn model"
        ) from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"models"} or not data["models"]:
        raise SettingsError(
            f"{where} must hold one key, 'models:', a non-empty list of models "
            "(each with name, spec, source)"
        )
    models = tuple(
        _model_from_entry(entry, i, path.expanduser().resolve().parent, where)
        for i, entry in enumerate(data["models"])
    )
    names = [m.name for m in models]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SettingsError(f"{where}: model name(s) {twice} appear twice; names must be unique")
    ports = [p for m in models for p in (m.staging_port, m.production_port) if p]
    if len(ports) != len(set(ports)):
        raise SettingsError(f"{where}: two models share a router port; give each its own ports")
    return models


def _model_from_entry(entry: Any, index: int, base: Path, where: str) -> ModelConfig:
    """One ``models:`` entry of a platform file."""
    if not isinstance(entry, dict):
        raise SettingsError(f"{where}: models[{index}] must be a mapping with name, spec, source")
    name = str(entry.get("name", ""))
    at = f"{where}: models[{index}]" + (f" ({name})" if name else "")
    unknown = sorted(set(entry) - _MODEL_KEYS)
    if unknown:
        raise SettingsError(f"{at} has unknown key(s) {unknown}; use {sorted(_MODEL_KEYS)}")
    if not _NAME.match(name):
        raise SettingsError(
            f"{at}.name {name!r} must be lower-case letters, digits and _ (starting with a "
            "letter, at most 40): it prefixes asset keys, jobs and the registered model"
        )
    spec_path = _spec_path(str(entry.get("spec") or DEFAULT_MODEL), base)
    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        raise SettingsError(f"{at}.spec: {exc}") from None
    source = _source_from_entry(entry.get("source") or {"kind": "synthetic"}, base, spec, at)
    if entry.get("mapping"):
        mapped = _mapping(str(_resolve(str(entry["mapping"]), base)), spec, f"{at}.mapping")
        source = SourceConfig(**{**source.__dict__, "mapping": mapped})
    ports = entry.get("ports") or {}
    if not isinstance(ports, dict) or set(ports) - {"staging", "production"}:
        raise SettingsError(f"{at}.ports must be {{staging: <port>, production: <port>}}")
    return ModelConfig(
        name=name,
        spec=spec,
        spec_path=spec_path,
        source=source,
        key_prefix=(name,),
        registered_model=str(entry.get("registered_model") or f"{name}_model"),
        staging_port=_port(ports.get("staging", 0), f"{at}.ports.staging"),
        production_port=_port(ports.get("production", 0), f"{at}.ports.production"),
        schedule=str(entry.get("schedule") or DEFAULT_SCHEDULE),
    )


def _spec_path(value: str, base: Path) -> str:
    """A bare name is a spec shipped in the package (``churn`` -> ``specs/churn.yaml``); any
    other value is a path, relative to the platform file."""
    if re.fullmatch(r"[A-Za-z0-9_]+", value):
        return str(SHIPPED_SPECS / f"{value}.yaml")
    return str(_resolve(value, base))


def _resolve(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _port(value: Any, at: str) -> int:
    if not isinstance(value, int) or not 0 <= value <= 65535:
        raise SettingsError(
            f"{at} must be a port number 0..65535 (0: pick a free one), got {value!r}"
        )
    return value


def _source_from_entry(entry: Any, base: Path, spec: Spec, at: str) -> SourceConfig:
    """A model's ``source:`` mapping of a platform file."""
    kind = entry.get("kind") if isinstance(entry, dict) else None
    if kind not in _SOURCE_KEYS:
        raise SettingsError(f"{at}.source.kind must be one of {sorted(_SOURCE_KEYS)}, got {kind!r}")
    unknown = sorted(set(entry) - _SOURCE_KEYS[kind])
    if unknown:
        raise SettingsError(
            f"{at}.source has unknown key(s) {unknown} for kind {kind}; use {sorted(_SOURCE_KEYS[kind])}"
        )
    if kind == "file":
        if not entry.get("path"):
            raise SettingsError(f"{at}.source needs path: a CSV/Parquet file or a folder of them")
        return SourceConfig(kind=kind, path=str(_resolve(str(entry["path"]), base)))
    if kind == "sql":
        if not entry.get("url_env") or not (entry.get("table") or entry.get("query")):
            raise SettingsError(
                f"{at}.source (sql) needs url_env (the environment variable holding the "
                "SQLAlchemy URL) and table or query"
            )
        return SourceConfig(
            kind=kind,
            url_env=str(entry["url_env"]),
            table=str(entry.get("table") or ""),
            query=str(entry.get("query") or ""),
            scores_query=str(entry.get("scores_query") or ""),
        )
    defaults = SourceConfig()
    return SourceConfig(
        kind=kind,
        rows=int(entry.get("rows", defaults.rows)),
        seed=int(entry.get("seed", defaults.seed)),
        spend_shift=float(entry.get("spend_shift", defaults.spend_shift)),
        concept_drift=float(entry.get("concept_drift", defaults.concept_drift)),
        as_of=str(entry.get("as_of", "")),
    )
