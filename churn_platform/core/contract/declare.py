"""The single declaration: the contract rules a spec gives, and their run-time overrides.

``ContractConfig`` overrides bounds, limits and severities (checked against the rules the
spec declares, hence in this module). One builder per kind of rule; ``contract_rules``
puts them in the order reports and asset checks list them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from churn_platform.core.contract.results import ERROR, SEVERITIES, Severity
from churn_platform.core.contract.rules import NotNullRule, RangeRule, Rule, SetRule, UniqueRule
from churn_platform.core.contract.table_rules import (
    ColumnTypesRule,
    MeanRangeRule,
    NullRateRule,
    ParseableRule,
    RequiredColumnsRule,
    RowCountRule,
)
from churn_platform.core.spec import NUMERIC_KINDS, Spec, SpecError

# Legacy example-specific ContractConfig fields: field -> (column, what it overrides).
# They override the spec's bound of that column; the spec must have it.
OVERRIDES: dict[str, tuple[str, str]] = {
    "tenure_months_range": ("tenure_months", "range"),
    "monthly_spend_range": ("monthly_spend", "range"),
    "last_login_hour_range": ("last_login_hour", "range"),
    "support_tickets_min": ("support_tickets", "min"),
    "monthly_spend_mean_range": ("monthly_spend", "mean_range"),
    "contract_types": ("contract_type", "allowed"),
    "regions": ("region", "allowed"),
    "churned_values": ("churned", "target"),
}


@dataclass(frozen=True)
class ContractConfig:
    """Run-time overrides of the contract the spec declares. ``None`` means "from the spec".

    ``tenure_months_range``, ``monthly_spend_range``, ``last_login_hour_range``,
    ``support_tickets_min``, ``monthly_spend_mean_range``, ``contract_types``, ``regions``
    and ``churned_values`` override the spec's bound for that column (the spec must have
    the column and that kind of bound). ``min_rows`` overrides ``dataset.min_rows``;
    ``default_null_rate_limit`` overrides ``dataset.max_null_rate`` (the limit of features
    without their own ``max_null_rate``). ``null_rate_limits`` overrides the limit (fraction
    0..1) of any spec column but the entity id (whose nulls are ``<id>_not_null``).
    ``severities`` overrides a rule's severity by rule name (``"ERROR"`` or ``"WARN"``).
    Names are checked against ``spec``, the spec whose contract this overrides (required).
    """

    tenure_months_range: tuple[float, float] | None = None
    monthly_spend_range: tuple[float, float] | None = None
    last_login_hour_range: tuple[float, float] | None = None
    support_tickets_min: float | None = None
    monthly_spend_mean_range: tuple[float, float] | None = None
    contract_types: tuple[str, ...] | None = None
    regions: tuple[str, ...] | None = None
    churned_values: tuple[int, ...] | None = None
    min_rows: int | None = None
    default_null_rate_limit: float | None = None
    null_rate_limits: Mapping[str, float] = field(default_factory=dict)
    severities: Mapping[str, str] = field(default_factory=dict)
    failure_sample_size: int = 20
    spec: Spec = field(kw_only=True, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in (
            "tenure_months_range",
            "monthly_spend_range",
            "last_login_hour_range",
            "monthly_spend_mean_range",
        ):
            pair = getattr(self, name)
            if pair is None:
                continue
            if len(pair) != 2 or not pair[0] <= pair[1]:
                raise ValueError(f"ContractConfig.{name} must be [low, high] with low <= high")
        limits = dict(self.null_rate_limits)
        if self.default_null_rate_limit is not None:
            limits = {"default": self.default_null_rate_limit, **limits}
        for col, limit in limits.items():
            if not 0 <= limit <= 1:
                raise ValueError(
                    f"ContractConfig null-rate limit for {col!r} must be a fraction in [0, 1], "
                    f"got {limit}"
                )
        bad_levels = {k: v for k, v in self.severities.items() if v not in SEVERITIES}
        if bad_levels:
            raise ValueError(
                f"ContractConfig.severities values must be 'ERROR' or 'WARN', got {bad_levels}"
            )
        if self.failure_sample_size < 0 or (self.min_rows is not None and self.min_rows < 0):
            raise ValueError("ContractConfig.failure_sample_size and min_rows must be >= 0")
        self.check_against(self.spec)

    def check_against(self, spec: Spec) -> None:
        """Raise ``ValueError`` naming the key when an override does not fit ``spec``."""
        for key, (column, part) in OVERRIDES.items():
            if getattr(self, key) is not None:
                _check_override(spec, key, column, part)
        null_cols = null_rate_columns(spec)
        bad_cols = sorted(set(self.null_rate_limits) - set(null_cols))
        if bad_cols:
            raise ValueError(
                f"ContractConfig.null_rate_limits names {bad_cols}; use the spec's columns "
                f"{list(null_cols)} ({spec.id_column} nulls are {spec.id_column}_not_null)"
            )
        known = [rule.name for rule in build_rules(self, spec)]
        bad_rules = sorted(set(self.severities) - set(known))
        if bad_rules:
            raise ValueError(
                f"ContractConfig.severities names unknown rule(s) {bad_rules}; known rules: {known}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, spec: Spec) -> ContractConfig:
        """Build from plain config (lists for ranges), rejecting unknown keys by name.

        Names (rules, columns) are checked against ``spec``.
        """
        data = dict(data or {})
        names = {f.name for f in fields(cls)} - {"spec"}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"contract config has unknown key(s) {unknown}; known keys: {sorted(names)}"
            )
        tuples = {
            k: tuple(v)
            for k, v in data.items()
            if k.endswith(("_range", "_types", "regions", "_values")) and v is not None
        }
        return cls(**{**data, **tuples}, spec=spec)

    def severity(self, rule: str, default: Severity) -> Severity:
        """The configured severity of ``rule`` (``default`` when not overridden)."""
        return self.severities.get(rule, default)  # type: ignore[return-value]

    def null_rate_limit(self, column: str, spec: Spec) -> float:
        """The null-rate limit of ``column`` in ``spec``: the override, else the spec's."""
        override = self.null_rate_override(column, spec)
        return float(spec.null_rate_limit(column)) if override is None else override

    def null_rate_override(self, column: str, spec: Spec) -> float | None:
        """The limit this config sets for ``column`` of ``spec`` (None: the spec's applies)."""
        if column in self.null_rate_limits:
            return float(self.null_rate_limits[column])
        if (
            self.default_null_rate_limit is not None
            and column in spec.features
            and spec.features[column].nullable
            and spec.features[column].max_null_rate is None
        ):
            return float(self.default_null_rate_limit)
        return None


def _check_override(spec: Spec, key: str, column: str, part: str) -> None:
    if part == "target":
        if column != spec.target_column:
            raise ValueError(
                f"ContractConfig.{key} overrides the allowed values of {column!r}, but spec "
                f"{spec.name!r} names its target {spec.target_column!r}; remove {key} (the "
                "target is 0/1 after mapping)"
            )
        return
    if column not in spec.features:
        raise ValueError(
            f"ContractConfig.{key} overrides a bound of column {column!r}, which spec "
            f"{spec.name!r} does not have (features: {list(spec.features)}); remove {key} "
            "or set the bound in the spec"
        )
    feature = spec.features[column]
    has = {
        "range": feature.range is not None,
        "min": feature.range is not None and feature.range[0] is not None,
        "mean_range": feature.mean_range is not None,
        "allowed": feature.kind == "categorical",
    }[part]
    if not has:
        spec_key = {"min": "range", "allowed": "allowed"}.get(part, part)
        raise ValueError(
            f"ContractConfig.{key} overrides features.{column}.{spec_key}, which spec "
            f"{spec.name!r} does not declare; declare it in the spec (the rule and its asset "
            f"check come from the spec) or remove {key}"
        )


def null_rate_columns(spec: Spec) -> tuple[str, ...]:
    """Columns with a ``<column>_null_rate`` rule: every spec column but the entity id."""
    return tuple(c for c in spec.all_columns if c != spec.id_column)


def _num(value: float | None) -> float | int | None:
    """A bound as written: 600.0 -> 600 (descriptions and bounds read like the spec)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def rule_slug(column: str) -> str:
    """``column`` as part of a rule (and Dagster check) name: letters, digits and ``_``."""
    return re.sub(r"[^A-Za-z0-9_]", "_", column)


def contract_rules(config: ContractConfig | None = None, *, spec: Spec) -> list[Rule]:
    """The contract ``spec`` declares: every rule, in the order reports and checks list them.

    Order: row count, column presence, types, parseability, the id's not-null and unique
    rules, numeric ranges (both bounds, then one-sided bounds), column means, categorical
    sets, the target's 0/1 set, then a null-rate rule per column but the id. ``config``
    overrides bounds, limits and severities, never which rules exist (their names are the
    asset checks defined when the definitions load).
    """
    c = config or ContractConfig(spec=spec)
    if c.spec is not spec and c.spec.hash != spec.hash:
        c.check_against(spec)
    return build_rules(c, spec)


def rule_names(spec: Spec) -> list[str]:
    """Names of every contract rule of ``spec`` (stable: one Dagster asset check each)."""
    return [r.name for r in contract_rules(spec=spec)]


def build_rules(c: ContractConfig, spec: Spec) -> list[Rule]:
    """The rules of ``spec`` under ``c`` (whose overrides must already fit ``spec``)."""
    rules = [
        *_table_rules(c, spec),
        *_range_rules(c, spec),
        *_mean_rules(c, spec),
        *_set_rules(c, spec),
        *_null_rate_rules(c, spec),
    ]
    names = [r.name for r in rules]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(
            f"spec {spec.name!r} gives several contract rules the same name {dupes}; rename "
            "the columns behind them (rule names are column names plus a suffix)"
        )
    return rules


def _override(c: ContractConfig, column: str, part: str) -> Any:
    """The override of ``column``'s ``part`` bound in ``c`` (None: the spec's applies)."""
    for key, (col, what) in OVERRIDES.items():
        if col == column and what == part and getattr(c, key) is not None:
            return getattr(c, key)
    return None


def _override_key(c: ContractConfig, column: str, parts: tuple[str, ...]) -> str | None:
    """The ``ContractConfig`` key that overrides one of ``column``'s ``parts``, if set."""
    for key, (col, what) in OVERRIDES.items():
        if col == column and what in parts and getattr(c, key) is not None:
            return key
    return None


def _accept_hint(
    c: ContractConfig, column: str, what: str, spec_key: str, parts: tuple[str, ...]
) -> str:
    """How to accept new data a rule rejects: the spec key (or run-time override) to edit."""
    override = _override_key(c, column, parts)
    where = (
        f"the contract config key {override}"
        if override is not None
        else f"{spec_key} in the spec file"
    )
    return f"to accept the new {what}, edit {where}"


def _table_rules(c: ContractConfig, spec: Spec) -> list[Rule]:
    """Row count, presence, types, parseability and the entity id's rules."""
    idc = spec.id_column
    ids = rule_slug(idc)
    min_rows = spec.dataset.min_rows if c.min_rows is None else c.min_rows
    return [
        RowCountRule(
            "row_count_positive",
            c.severity("row_count_positive", ERROR),
            f"the snapshot has at least {min_rows} row(s)",
            min_rows=min_rows,
        ),
        RequiredColumnsRule(
            "required_columns_present",
            c.severity("required_columns_present", ERROR),
            "every canonical column is present",
            columns=spec.all_columns,
        ),
        ColumnTypesRule(
            "column_types_match",
            c.severity("column_types_match", ERROR),
            "columns have their canonical dtypes",
            dtypes=spec.dtypes,
        ),
        ParseableRule(
            "values_parseable",
            c.severity("values_parseable", ERROR),
            "every value could be read as its column's type when mapped",
        ),
        NotNullRule(
            f"{ids}_not_null", c.severity(f"{ids}_not_null", ERROR), f"{idc} is never null", idc
        ),
        UniqueRule(f"{ids}_unique", c.severity(f"{ids}_unique", ERROR), f"{idc} is unique", idc),
    ]


def _range_rules(c: ContractConfig, spec: Spec) -> list[Rule]:
    """Numeric ranges: every rule with both bounds first, then the one-sided ones."""
    both: list[Rule] = []
    one_sided: list[Rule] = []
    for col, feature in spec.features.items():
        if feature.kind not in NUMERIC_KINDS or feature.range is None:
            continue
        low, high = feature.range
        over = _override(c, col, "range")
        if over is not None:
            low, high = over
        over_min = _override(c, col, "min")
        if over_min is not None:
            low = over_min
        lo, hi = _num(low), _num(high)
        slug = rule_slug(col)
        # the name follows the spec's shape, so run-time overrides never rename a check
        spec_low, spec_high = feature.range
        if spec_low is not None and spec_high is not None:
            name, text, group = f"{slug}_in_range", f"{col} in [{lo}, {hi}]", both
        elif spec_high is None and spec_low is not None:
            suffix = "non_negative" if spec_low == 0 else "at_least"
            name, text, group = f"{slug}_{suffix}", f"{col} >= {lo}", one_sided
        elif spec_low is None and spec_high is not None:
            name, text, group = f"{slug}_at_most", f"{col} <= {hi}", one_sided
        else:
            continue  # [null, null]: no bound at all
        hint = _accept_hint(c, col, "range", f"features.{col}.range", ("range", "min"))
        low_bound = -math.inf if lo is None else lo
        group.append(
            RangeRule(name, c.severity(name, ERROR), text, col, hint, low=low_bound, high=hi)
        )
    return both + one_sided


def _mean_rules(c: ContractConfig, spec: Spec) -> list[Rule]:
    """One ``<col>_mean_in_range`` per feature with a ``mean_range``."""
    rules: list[Rule] = []
    for col, feature in spec.features.items():
        if feature.mean_range is None:
            continue
        over = _override(c, col, "mean_range")
        low, high = over if over is not None else feature.mean_range
        name = f"{rule_slug(col)}_mean_in_range"
        hint = _accept_hint(c, col, "mean", f"features.{col}.mean_range", ("mean_range",))
        rules.append(
            MeanRangeRule(
                name,
                c.severity(name, ERROR),
                f"mean {col} in [{_num(low)}, {_num(high)}]",
                col,
                hint,
                low=_num(low),  # type: ignore[arg-type]  # a mean range has both sides
                high=_num(high),  # type: ignore[arg-type]
            )
        )
    return rules


def _set_rules(c: ContractConfig, spec: Spec) -> list[Rule]:
    """One ``<col>_in_set`` per categorical feature, then the target's 0/1 set."""
    rules: list[Rule] = []
    for col, feature in spec.features.items():
        if feature.kind != "categorical":
            continue
        over = _override(c, col, "allowed")
        allowed = tuple(over if over is not None else feature.allowed or ())
        name = f"{rule_slug(col)}_in_set"
        hint = _accept_hint(c, col, "values", f"features.{col}.allowed", ("allowed",))
        rules.append(
            SetRule(
                name,
                c.severity(name, ERROR),
                f"{col} in {list(allowed)}",
                col,
                hint,
                allowed=allowed,
            )
        )
    target = spec.target_column
    over = _override(c, target, "target")
    values = tuple(over if over is not None else (0, 1))
    name = f"{rule_slug(target)}_in_set"
    rules.append(
        SetRule(
            name,
            c.severity(name, ERROR),
            f"{target} in {list(values)}",
            target,
            allowed=values,
            numeric=True,
        )
    )
    return rules


def _null_rate_key(spec: Spec, column: str) -> str:
    """The spec key that sets ``column``'s null-rate limit."""
    if column == spec.target_column:
        return "target.max_null_rate"
    feature = spec.features[column]
    if not feature.nullable:
        return f"features.{column}.nullable"
    # also when dataset.max_null_rate applies now: the feature's own key changes only it
    return f"features.{column}.max_null_rate"


def _null_rate_rules(c: ContractConfig, spec: Spec) -> list[Rule]:
    """One ``<col>_null_rate`` per spec column but the entity id."""
    rules: list[Rule] = []
    for col in null_rate_columns(spec):
        name = f"{rule_slug(col)}_null_rate"
        limit = c.null_rate_limit(col, spec)
        where = (
            "the contract config's null-rate limits"
            if c.null_rate_override(col, spec) is not None
            else f"{_null_rate_key(spec, col)} in the spec file"
        )
        hint = f"to accept the new null rate, edit {where}"
        text = f"null rate of {col} <= {limit}"
        rules.append(NullRateRule(name, c.severity(name, ERROR), text, col, hint, limit=limit))
    return rules
