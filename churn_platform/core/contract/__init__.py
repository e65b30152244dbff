"""The data contract a table spec declares, derived once.

``contract_rules(config, spec=spec)`` is the single declaration, generated from the spec
(``core.spec``, always passed in): a list of rule objects, each with a
snake_case name (one Dagster asset check per rule), a severity (``ERROR`` blocks,
``WARN`` only reports), a description and one vectorised predicate (``violations``).
The rules follow the spec's columns: row count, presence, types, parseability, the
entity id's not-null and unique rules, ``<col>_in_range`` (both bounds),
``<col>_non_negative`` / ``<col>_at_least`` / ``<col>_at_most`` (one bound),
``<col>_mean_in_range``, ``<col>_in_set`` per categorical, ``<target>_in_set`` and a
``<col>_null_rate`` per column but the id. ``ContractConfig`` overrides bounds, limits and
severities at run time. Two things are generated from that list:

* ``evaluate_contract`` - the fast evaluator. It runs every rule (never stopping at
  the first failure) straight on numpy/pandas arrays and returns a ``RuleResult``
  per rule with the observed value, the bound, the failing row count and a sample of
  failing rows (the entity id plus the column).
* ``pandera_schema`` - the same rules as a pandera ``DataFrameSchema`` whose custom
  checks call the very same predicates and are named after the rules; ``WARN``
  rules become pandera warnings. ``validated_frame`` uses it to validate and coerce
  to ``spec.dtypes``.

Rules cope with frames that break the schema itself: a missing column fails
``required_columns_present`` and every rule needing it reports "column missing"; a
column of the wrong type fails ``column_types_match`` naming the column and its
dtype, while range rules read whatever values of it are numeric. A failing range, mean,
set or null-rate rule names the spec key to edit to accept the new data.

Modules: ``results`` (severities, ``RuleResult``, ``ContractError``), ``frame_view``
(cached column arrays), ``rules`` and ``table_rules`` (the rule kinds), ``declare`` (the
rules a spec gives, ``ContractConfig``), ``evaluate`` (the fast evaluator), ``schema``
(pandera, ``validated_frame``) and ``hashing`` (``data_version``).
"""

from churn_platform.core.contract.declare import (
    OVERRIDES,
    ContractConfig,
    build_rules,
    contract_rules,
    null_rate_columns,
    rule_names,
    rule_slug,
)
from churn_platform.core.contract.evaluate import blocking_failures, evaluate_contract
from churn_platform.core.contract.frame_view import FrameView, as_float, dtype_compatible
from churn_platform.core.contract.hashing import data_version
from churn_platform.core.contract.results import (
    COLUMN_MISSING,
    ERROR,
    SEVERITIES,
    WARN,
    ContractError,
    RuleResult,
    Severity,
)
from churn_platform.core.contract.rules import (
    NotNullRule,
    RangeRule,
    RowRule,
    Rule,
    SetRule,
    UniqueRule,
)
from churn_platform.core.contract.schema import (
    pandera_failed_rules,
    pandera_schema,
    validated_frame,
)
from churn_platform.core.contract.table_rules import (
    ColumnTypesRule,
    MeanRangeRule,
    NullRateRule,
    ParseableRule,
    RequiredColumnsRule,
    RowCountRule,
)

__all__ = [
    "COLUMN_MISSING",
    "ERROR",
    "OVERRIDES",
    "SEVERITIES",
    "WARN",
    "ColumnTypesRule",
    "ContractConfig",
    "ContractError",
    "FrameView",
    "MeanRangeRule",
    "NotNullRule",
    "NullRateRule",
    "ParseableRule",
    "RangeRule",
    "RequiredColumnsRule",
    "RowCountRule",
    "RowRule",
    "Rule",
    "RuleResult",
    "SetRule",
    "Severity",
    "UniqueRule",
    "as_float",
    "blocking_failures",
    "build_rules",
    "contract_rules",
    "data_version",
    "dtype_compatible",
    "evaluate_contract",
    "null_rate_columns",
    "pandera_failed_rules",
    "pandera_schema",
    "rule_names",
    "rule_slug",
    "validated_frame",
]
