"""The table spec: one YAML file that says what a team's churn table is and how to model it.

A spec declares the entity id, the target (which values mean churned), every feature
(its kind, source column, value mapping, nulls, range or allowed values), dataset rules,
model thresholds, named slices, behavioural invariances, the drift features and the
holdout. Everything that used to follow from the fixed example schema follows from a
``Spec`` instead: the data contract, the feature pipeline, the model checks, the model
server's request schema and the drift profile. The shipped ``specs/churn.yaml``
reproduces the synthetic example exactly.

``load_spec(path)`` parses and validates a file; errors (``SpecError``) name the key,
its line in the file and the fix. A ``Spec`` is immutable and hashable by content
(``spec.hash``): snapshot metadata and every logged model record it, so a model carries
its own spec.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from churn_platform.core.serving_rules import (
    DEFAULT_SERVING_RULES,
    RESERVED_NAMES,
    ServingRules,
)

SPECS_DIR = Path(__file__).resolve().parent.parent / "specs"
DEFAULT_SPEC_PATH = SPECS_DIR / "churn.yaml"

Kind = Literal["numeric", "integer", "categorical", "boolean", "date", "cyclical"]
KINDS: tuple[str, ...] = ("numeric", "integer", "categorical", "boolean", "date", "cyclical")
Encoding = Literal["onehot", "frequency", "native"]

# pandas dtype of a validated column, per feature kind
KIND_DTYPES: dict[str, str] = {
    "numeric": "float64",
    "integer": "Int64",
    "categorical": "string",
    "boolean": "boolean",
    "date": "datetime64[ns]",
    "cyclical": "Int64",
}
NUMERIC_KINDS: frozenset[str] = frozenset({"numeric", "integer", "cyclical"})


class SpecError(ValueError):
    """A spec is invalid; the message names the key (and its line) and what to change."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Bound = float | None


class Feature(_Strict):
    """One model input column."""

    kind: Kind = Field(description="numeric, integer, categorical, boolean, date or cyclical")
    source: str | None = Field(
        default=None, description="column name in the source table (default: the feature name)"
    )
    values: dict[str, Any] = Field(
        default_factory=dict,
        description="source value -> value (e.g. 'One year': annual), applied before typing",
    )
    nullable: bool = Field(default=True, description="may the column hold nulls at all")
    max_null_rate: float | None = Field(
        default=None, ge=0.0, le=1.0, description="largest share of nulls (default: dataset's)"
    )
    range: tuple[Bound, Bound] | None = Field(
        default=None, description="[min, max] of numeric values; null for an open side"
    )
    mean_range: tuple[float, float] | None = Field(
        default=None, description="[low, high] the column's mean must fall in"
    )
    allowed: tuple[str, ...] | None = Field(
        default=None, description="allowed values of a categorical feature"
    )
    encoding: tuple[Encoding, ...] = Field(
        default=("frequency",),
        description="categorical encodings: onehot, frequency and/or native",
    )
    period: float | None = Field(
        default=None, gt=0, description="cycle length of a cyclical feature (24 for hours)"
    )
    drift: bool = Field(default=True, description="watch this feature for drift (PSI)")
    description: str = ""

    @model_validator(mode="after")
    def _kind_fields(self) -> Feature:
        numeric = self.kind in NUMERIC_KINDS
        if self.range is not None and not numeric:
            raise ValueError(
                f"'range' is for numeric, integer or cyclical features, not {self.kind}"
            )
        if self.mean_range is not None and not numeric:
            raise ValueError(f"'mean_range' is for numeric features, not {self.kind}")
        if self.allowed is not None and self.kind != "categorical":
            raise ValueError(f"'allowed' is for categorical features, not {self.kind}")
        if self.kind == "categorical" and not self.allowed:
            raise ValueError("a categorical feature needs 'allowed': the list of its values")
        if self.kind == "cyclical" and self.period is None:
            raise ValueError(
                "a cyclical feature needs 'period' (24 for hour of day, 7 for weekday)"
            )
        if self.period is not None and self.kind != "cyclical":
            raise ValueError(f"'period' is for cyclical features, not {self.kind}")
        if self.kind == "categorical" and not self.encoding:
            raise ValueError("'encoding' needs at least one of onehot, frequency, native")
        for name in ("range", "mean_range"):
            pair = getattr(self, name)
            if pair is not None:
                low, high = pair
                if low is not None and high is not None and not low <= high:
                    raise ValueError(
                        f"'{name}' must be [low, high] with low <= high, got {list(pair)}"
                    )
        if self.max_null_rate is not None and self.max_null_rate > 0 and not self.nullable:
            raise ValueError(
                "'nullable: false' and a 'max_null_rate' above 0 contradict each other"
            )
        return self

    @property
    def dtype(self) -> str:
        """The pandas dtype of the validated column."""
        return KIND_DTYPES[self.kind]


class EntityId(_Strict):
    """The column that identifies a customer (unique, never null; the holdout hashes it)."""

    column: str
    source: str | None = None


class Target(_Strict):
    """The label column and which of its values mean churned (1) or stayed (0)."""

    column: str
    source: str | None = None
    positive: tuple[Any, ...] = Field(description="source values that mean churned")
    negative: tuple[Any, ...] = Field(description="source values that mean stayed")
    max_null_rate: float = Field(default=0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _values(self) -> Target:
        if not self.positive or not self.negative:
            raise ValueError("'positive' and 'negative' each need at least one value")
        both = {str(v) for v in self.positive} & {str(v) for v in self.negative}
        if both:
            raise ValueError(f"value(s) {sorted(both)} are both positive and negative")
        return self

    def value_map(self) -> dict[str, int]:
        """Source value (as text) -> 1/0, for the mapping step."""
        return {**{str(v): 1 for v in self.positive}, **{str(v): 0 for v in self.negative}}


class Dataset(_Strict):
    """Rules on the whole snapshot."""

    min_rows: int = Field(default=1, ge=0)
    max_null_rate: float = Field(
        default=0.05, ge=0.0, le=1.0, description="default null-rate limit of a feature"
    )


class ModelThresholds(_Strict):
    """What a challenger must reach on the holdout."""

    min_auc: float = Field(default=0.80, ge=0.0, le=1.0)
    min_slice_auc: float = Field(default=0.74, ge=0.0, le=1.0)
    min_slice_rows: int = Field(default=30, ge=1)


class Slice(_Strict):
    """A named slice of the holdout (one of equals, values or bands)."""

    name: str
    column: str
    equals: Any = Field(default=None, description="one slice: rows where column == equals")
    values: tuple[str, ...] | Literal["all"] | None = Field(
        default=None, description="a slice per value, named name:value ('all': every allowed)"
    )
    bands: dict[str, tuple[Bound, Bound]] | None = Field(
        default=None, description="label -> [low, high) bands of a numeric column, named name:label"
    )

    @model_validator(mode="after")
    def _one_way(self) -> Slice:
        given = [k for k in ("equals", "values", "bands") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"slice {self.name!r} needs exactly one of 'equals', 'values', 'bands' (got {given})"
            )
        return self


class Invariance(_Strict):
    """Changing one feature must move the churn probability in a stated direction."""

    name: str
    feature: str
    from_: Any = Field(default=None, alias="from")
    to: Any = None
    step: float | None = Field(default=None, description="numeric features: add this step")
    direction: Literal["decrease", "increase"]
    min_fraction: float = Field(default=0.9, ge=0.0, le=1.0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_change(self) -> Invariance:
        pair = self.from_ is not None and self.to is not None
        if pair == (self.step is not None):
            raise ValueError(
                f"invariance {self.name!r} needs either 'from' and 'to' (a value change) "
                "or 'step' (a numeric move), not both or neither"
            )
        return self


class Drift(_Strict):
    """Which features the drift sensor watches and when it fires."""

    features: tuple[str, ...] | None = Field(
        default=None, description="features to watch (default: every feature with drift: true)"
    )
    threshold: float = Field(default=0.2, gt=0.0)


class HoldoutSpec(_Strict):
    """The fixed holdout: a salted hash of the entity id."""

    fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    salt: str = "churn-holdout-v1"


OUTCOME_SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "file": ("path",),
    "sql": ("url", "table", "query", "db_schema"),
    "synthetic": ("concept_drift",),
}


class OutcomeSource(_Strict):
    """Where outcomes come from: a file or folder, a SQL table or query, or the synthetic
    world (the customers the synthetic source drew, from the same mechanism)."""

    kind: Literal["file", "sql", "synthetic"]
    path: str | None = Field(default=None, description="file: a CSV/Parquet file or folder")
    url: str | None = Field(default=None, description="sql: a SQLAlchemy URL")
    table: str | None = Field(default=None, description="sql: a table (or use query)")
    query: str | None = Field(default=None, description="sql: a query (or use table)")
    db_schema: str | None = Field(default=None, description="sql: the table's schema")
    concept_drift: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="synthetic: 0 keeps the mechanism; 1 reverses the contract and tenure "
        "effects (feature distributions unchanged)",
    )

    @model_validator(mode="after")
    def _kind_keys(self) -> OutcomeSource:
        allowed = OUTCOME_SOURCE_KEYS[self.kind]
        given = [k for k in ("path", "url", "table", "query", "db_schema") if getattr(self, k)]
        if self.concept_drift:
            given.append("concept_drift")
        stray = [k for k in given if k not in allowed]
        if stray:
            raise ValueError(
                f"outcomes.source kind {self.kind!r} takes {list(allowed)}, not {stray}: "
                "remove them or change 'kind'"
            )
        if self.kind == "file" and not self.path:
            raise ValueError("outcomes.source kind 'file' needs 'path' (a file or folder)")
        if self.kind == "sql" and (not self.url or bool(self.table) == bool(self.query)):
            raise ValueError("outcomes.source kind 'sql' needs 'url' and one of 'table', 'query'")
        return self


class Outcomes(_Strict):
    """What each customer did after being scored: the source, its columns and the delay."""

    source: OutcomeSource
    id_column: str | None = Field(
        default=None, description="the outcomes' customer id column (default: the entity id's)"
    )
    outcome_column: str | None = Field(
        default=None,
        description="the outcome column (default: the target's), mapped with the target's values",
    )
    known_at_column: str = Field(
        default="known_at", description="the date (or Unix seconds) the outcome became known"
    )
    label_delay_days: int = Field(
        default=30, ge=0, description="days after a prediction until its outcome is final"
    )


class Spec(_Strict):
    """A whole table spec. Build with ``load_spec`` / ``parse_spec``; never mutate."""

    version: Literal[1] = 1
    name: str = "churn"
    description: str = ""
    entity_id: EntityId
    target: Target
    features: dict[str, Feature]
    dataset: Dataset = Dataset()
    model: ModelThresholds = ModelThresholds()
    slices: tuple[Slice, ...] = ()
    invariances: tuple[Invariance, ...] = ()
    drift: Drift = Drift()
    holdout: HoldoutSpec = HoldoutSpec()
    outcomes: Outcomes | None = None
    serving: ServingRules = DEFAULT_SERVING_RULES

    @model_validator(mode="after")
    def _references(self) -> Spec:
        if not self.features:
            raise ValueError("'features' needs at least one feature")
        reserved = sorted(RESERVED_NAMES.intersection([self.target.column, *self.features]))
        if reserved:
            raise ValueError(
                f"feature or target name(s) {reserved} are reserved: every served prediction "
                f"carries {sorted(RESERVED_NAMES)} beside its inputs; rename them (keep the "
                "source column through 'source:')"
            )
        names = [self.entity_id.column, self.target.column, *self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"column name(s) {dupes} used twice (entity id, target, features)")
        sources = [self.source_of(n) for n in names]
        dupes = sorted({n for n in sources if sources.count(n) > 1})
        if dupes:
            raise ValueError(f"source column(s) {dupes} mapped twice; map each source column once")
        for sl in self.slices:
            _check_slice(self, sl)
        seen: set[str] = set()
        for inv in self.invariances:
            if inv.name in seen:
                raise ValueError(f"invariance name {inv.name!r} used twice")
            seen.add(inv.name)
            _check_invariance(self, inv)
        for name in self.drift.features or ():
            if name not in self.features:
                raise ValueError(
                    f"drift.features names {name!r}, not a feature; features: {list(self.features)}"
                )
        return self

    # -- derived views -----------------------------------------------------------------

    def outcome_columns(self) -> tuple[str, str, str]:
        """The outcomes' (id, outcome, known-at) source columns; ``SpecError`` without an
        ``outcomes`` section."""
        if self.outcomes is None:
            raise SpecError(
                f"spec {self.name!r} has no 'outcomes' section: add one (source, columns, "
                "label_delay_days) to measure the served versions' realized performance"
            )
        o = self.outcomes
        return (
            o.id_column or self.source_of(self.id_column),
            o.outcome_column or self.source_of(self.target_column),
            o.known_at_column,
        )

    @property
    def id_column(self) -> str:
        """The entity id column (validated name)."""
        return self.entity_id.column

    @property
    def target_column(self) -> str:
        """The label column (validated name; 1 = churned)."""
        return self.target.column

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Model input columns, in spec order (what the model server takes)."""
        return tuple(self.features)

    @property
    def all_columns(self) -> tuple[str, ...]:
        """Every validated column: id, features, target."""
        return (self.id_column, *self.features, self.target_column)

    @property
    def dtypes(self) -> dict[str, str]:
        """Validated pandas dtype per column."""
        return {
            self.id_column: "string",
            **{n: f.dtype for n, f in self.features.items()},
            self.target_column: "Int64",
        }

    def of_kind(self, *kinds: str) -> tuple[str, ...]:
        """Feature names of the given kinds, in spec order."""
        return tuple(n for n, f in self.features.items() if f.kind in kinds)

    def source_of(self, column: str) -> str:
        """The source column that feeds ``column`` (its own name unless ``source`` is set)."""
        if column == self.id_column:
            return self.entity_id.source or column
        if column == self.target_column:
            return self.target.source or column
        return self.features[column].source or column

    def null_rate_limit(self, column: str) -> float:
        """Largest share of nulls of ``column`` (0 for the id and non-nullable features)."""
        if column == self.id_column:
            return 0.0
        if column == self.target_column:
            return self.target.max_null_rate
        feature = self.features[column]
        if not feature.nullable:
            return 0.0
        if feature.max_null_rate is not None:
            return feature.max_null_rate
        return self.dataset.max_null_rate

    def drift_features(self) -> tuple[str, ...]:
        """Features the drift profile and sensor watch."""
        if self.drift.features is not None:
            return tuple(self.drift.features)
        return tuple(n for n, f in self.features.items() if f.drift)

    def mapping(self) -> dict[str, Any]:
        """The column and value mapping in ``core.mapping.ColumnMapping.from_dict`` shape."""
        columns = {self.source_of(c): c for c in self.all_columns if self.source_of(c) != c}
        values: dict[str, dict[Any, Any]] = {
            n: dict(f.values) for n, f in self.features.items() if f.values
        }
        target_map = self.target.value_map()
        if target_map != {"1": 1, "0": 0}:
            values[self.target_column] = target_map
        return {"columns": columns, "values": values}

    def slice_names(self) -> list[str]:
        """Every slice name the model checks report (``name`` or ``name:value``)."""
        out: list[str] = []
        for sl in self.slices:
            if sl.equals is not None:
                out.append(sl.name)
            elif sl.bands is not None:
                out.extend(f"{sl.name}:{label}" for label in sl.bands)
            else:
                out.extend(f"{sl.name}:{v}" for v in slice_values(self, sl))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe data that ``parse_spec`` reads back to an equal spec."""
        skip = {"serving"} if self.serving == DEFAULT_SERVING_RULES else None  # old hashes kept
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=False, exclude=skip)

    def to_yaml(self) -> str:
        """The spec as YAML (no comments; ``spec infer`` writes the commented form)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @functools.cached_property
    def hash(self) -> str:
        """sha256 of the spec's canonical JSON: equal specs, equal hashes."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def short_hash(self) -> str:
        """First 12 hex digits of ``hash`` (what metadata and tags show)."""
        return self.hash[:12]


def slice_values(spec: Spec, sl: Slice) -> tuple[str, ...]:
    """The values a ``values`` slice enumerates (every allowed value for ``all``)."""
    if sl.values == "all":
        feature = spec.features[sl.column]
        if feature.kind == "boolean":
            return ("true", "false")
        return tuple(feature.allowed or ())
    return tuple(sl.values or ())


def _feature(spec: Spec, column: str, refers: str) -> Feature:
    """The feature ``column`` that ``refers`` (e.g. "slice 's' is on column") names."""
    if column not in spec.features:
        raise ValueError(f"{refers} {column!r}, not a feature; features: {list(spec.features)}")
    return spec.features[column]


def _not_allowed(values: list[Any], feature: Feature, column: str, owner: str) -> None:
    """Refuse values a categorical ``feature`` does not allow, naming ``owner`` and the set."""
    allowed = feature.allowed or ()
    unknown = [v for v in values if str(v) not in allowed]
    if unknown:
        raise ValueError(
            f"{owner}: value(s) {unknown} not allowed for {column!r}; allowed: {list(allowed)}"
        )


def _check_slice(spec: Spec, sl: Slice) -> None:
    feature = _feature(spec, sl.column, f"slice {sl.name!r} is on column")
    if sl.bands is not None and feature.kind not in NUMERIC_KINDS:
        raise ValueError(
            f"slice {sl.name!r}: 'bands' need a numeric feature, {sl.column!r} is {feature.kind}"
        )
    if sl.values is not None and feature.kind not in ("categorical", "boolean"):
        raise ValueError(
            f"slice {sl.name!r}: 'values' need a categorical or boolean feature, "
            f"{sl.column!r} is {feature.kind}"
        )
    wanted: list[Any] = []
    if sl.equals is not None:
        wanted = [sl.equals]
    elif isinstance(sl.values, tuple):
        wanted = list(sl.values)
    if feature.kind == "categorical":
        _not_allowed(wanted, feature, sl.column, f"slice {sl.name!r}")
    if feature.kind == "boolean":
        bad = [v for v in wanted if str(v).lower() not in ("true", "false")]
        if bad:
            raise ValueError(
                f"slice {sl.name!r}: boolean {sl.column!r} takes true or false, got {bad}"
            )


def _check_invariance(spec: Spec, inv: Invariance) -> None:
    feature = _feature(spec, inv.feature, f"invariance {inv.name!r} changes")
    if inv.step is not None and feature.kind not in NUMERIC_KINDS:
        raise ValueError(
            f"invariance {inv.name!r}: 'step' needs a numeric feature, {inv.feature!r} is {feature.kind}"
        )
    if inv.step is None and feature.kind == "categorical":
        _not_allowed([inv.from_, inv.to], feature, inv.feature, f"invariance {inv.name!r}")


# -- loading ---------------------------------------------------------------------------


def _line_index(text: str) -> dict[tuple[str, ...], int]:
    """Key path -> 1-based line, from YAML's node marks (best effort)."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, str(i)))

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def _format_errors(exc: ValidationError, where: str, lines: Mapping[tuple[str, ...], int]) -> str:
    parts = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        # pydantic puts a model validator's error at the model's path; the key path is the loc
        key = ".".join(loc) or "(top level)"
        line = None
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in lines:
                line = lines[loc[:cut]]
                break
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}: remove it or fix its spelling"
        elif err["type"] == "literal_error" and loc and loc[-1] == "kind":
            message = f"unknown kind {err.get('input')!r}; use one of {', '.join(KINDS)}"
        elif err["type"] == "missing":
            message = f"required key {loc[-1]!r} is missing: add it"
        at = f"{where}:{line}" if line else where
        parts.append(f"{at}: {key}: {message}")
    return "invalid spec:\n" + "\n".join(f"- {p}" for p in parts)


def parse_spec(data: Mapping[str, Any] | str, where: str = "<spec>") -> Spec:
    """Validate ``data`` (a dict or YAML text) into a ``Spec``; ``SpecError`` names key and line."""
    lines: dict[tuple[str, ...], int] = {}
    if isinstance(data, str):
        lines = _line_index(data)
        try:
            loaded = yaml.safe_load(data)
        except yaml.YAMLError as exc:
            raise SpecError(f"{where} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise SpecError(f"{where} must be a YAML mapping with entity_id, target and features")
        data = loaded
    try:
        return Spec.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(_format_errors(exc, where, lines)) from None


@functools.lru_cache(maxsize=32)
def _load_cached(path: str, mtime_ns: int, size: int) -> Spec:
    text = Path(path).read_text(encoding="utf-8")
    return parse_spec(text, where=path)


def load_spec(path: str | Path | None = None) -> Spec:
    """Read and validate the spec at ``path`` (default: the shipped ``specs/churn.yaml``)."""
    p = Path(path) if path else DEFAULT_SPEC_PATH
    try:
        stat = p.stat()
    except OSError as exc:
        raise SpecError(
            f"spec file {str(p)!r} cannot be read ({exc.strerror}); set CHURN_SPEC to an "
            "existing YAML spec or unset it for the shipped churn spec"
        ) from None
    return _load_cached(str(p.resolve()), stat.st_mtime_ns, stat.st_size)


def default_spec() -> Spec:
    """The shipped spec that reproduces the synthetic churn example."""
    return load_spec(DEFAULT_SPEC_PATH)


def spec_from_json(text: str) -> Spec:
    """A spec from its JSON (``Spec.to_dict``) form, e.g. as logged with a model."""
    return parse_spec(json.loads(text), where="<logged spec>")


MODEL_METADATA_KEY = "churn_spec"
"""Key of the spec (``Spec.to_dict()``) in a logged model's MLmodel ``metadata``."""


def spec_of_model_metadata(metadata: Mapping[str, Any] | None) -> Spec:
    """The spec a model was trained with, from its MLmodel ``metadata``.

    Models logged before specs existed carry none: they were trained on the shipped
    churn spec, which is returned for them.
    """
    data = (metadata or {}).get(MODEL_METADATA_KEY)
    if data is None:
        return default_spec()
    if isinstance(data, str):
        return spec_from_json(data)
    return parse_spec(data, where="<logged spec>")


def describe_difference(old: Spec, new: Spec) -> list[str]:
    """How ``new`` differs from ``old``, one line per change a person cares about."""
    if old.hash == new.hash:
        return []
    out: list[str] = []
    dropped = [f for f in old.features if f not in new.features]
    added = [f for f in new.features if f not in old.features]
    if dropped:
        out.append(f"features dropped: {', '.join(dropped)}")
    if added:
        out.append(f"features added: {', '.join(added)}")
    for name in old.features:
        if name in new.features and old.features[name] != new.features[name]:
            a, b = old.features[name], new.features[name]
            changed = [k for k in type(a).model_fields if getattr(a, k) != getattr(b, k)]
            out.append(f"feature {name} changed: {', '.join(changed)}")
    for part in (
        "entity_id",
        "target",
        "dataset",
        "model",
        "slices",
        "invariances",
        "drift",
        "holdout",
        "serving",
    ):
        if getattr(old, part) != getattr(new, part):
            out.append(f"{part} changed")
    return out or ["metadata changed (name/description)"]


def columns_missing(spec: Spec, columns: Sequence[str]) -> list[str]:
    """Source columns the spec needs that ``columns`` lacks (after no renaming)."""
    have = set(columns)
    return [spec.source_of(c) for c in spec.all_columns if spec.source_of(c) not in have]
