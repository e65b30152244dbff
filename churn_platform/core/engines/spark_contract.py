"""The data contract on Spark: the same declared rules, names, failing counts and pass/fail.

``evaluate_on_spark`` takes the rules ``core.contract.contract_rules`` declares (never a list
of its own) and computes every rule's evidence as Spark aggregates in one pass over the data
(with the mapping's conversion counts and the data version), plus one grouping pass for the
entity id's uniqueness. Only failing rules run a further small job for their failure sample.
Rules that read no data (row count, column presence, parseability) and rules whose column is
missing are evaluated by their own pandas code on a row-less view, so their results and
messages are the pandas engine's. A rule kind without a Spark form raises ``EngineError``
naming the rule.

Failure samples name the entity id and the value; they carry no ``row`` position (a Spark
frame has no row order) and may show other rows than the pandas engine's sample.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from churn_platform.core.contract import (
    ColumnTypesRule,
    ContractConfig,
    FrameView,
    MeanRangeRule,
    NotNullRule,
    NullRateRule,
    ParseableRule,
    RangeRule,
    RequiredColumnsRule,
    RowCountRule,
    Rule,
    RuleResult,
    SetRule,
    UniqueRule,
    contract_rules,
)
from churn_platform.core.engines.engine_config import EngineError
from churn_platform.core.engines.spark_mapping import SparkMapped, quoted
from churn_platform.core.mapping import ColumnConversion
from churn_platform.core.spec import Spec

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

_NO_DATA = (RowCountRule, RequiredColumnsRule, ParseableRule)
_SPARK_KINDS = {
    "string": ("string",),
    "Int64": ("tinyint", "smallint", "int", "bigint"),
    "float64": ("tinyint", "smallint", "int", "bigint", "float", "double"),
    "boolean": ("boolean",),
}


@dataclass(frozen=True, eq=False)
class SparkChecked:
    """The contract results, the Spark data version, the row count and the mapping summary."""

    results: list[RuleResult]
    version: str
    rows: int
    summary: dict[str, Any]
    conversion: dict[str, ColumnConversion]


class _Pass:
    """Named aggregate expressions computed together in one Spark job."""

    def __init__(self) -> None:
        self.exprs: list[Column] = []
        self.row: dict[str, Any] = {}

    def add(self, name: str, expr: Column) -> str:
        self.exprs.append(expr.alias(name))
        return name

    def count(self, name: str, flag: Column) -> str:
        from pyspark.sql import functions as F

        return self.add(name, F.coalesce(F.sum(F.when(flag, 1).otherwise(0)), F.lit(0)))

    def run(self, frame: DataFrame) -> None:
        self.row = frame.agg(*self.exprs).collect()[0].asDict()

    def __getitem__(self, name: str) -> Any:
        return self.row[name]


def evaluate_on_spark(
    mapped: SparkMapped, config: ContractConfig | None = None, *, spec: Spec
) -> SparkChecked:
    """Evaluate every rule of ``spec``'s contract on ``mapped`` (from ``map_on_spark``).

    Never stops at the first failure; the results are ``RuleResult`` objects like the pandas
    engine's (``core.contract.evaluate_contract``), with the same names, severities, failing
    row counts and pass/fail on the same data.
    """
    from pyspark.sql import functions as F

    rules = contract_rules(config, spec=spec)
    sample = config.failure_sample_size if config is not None else 20
    agg = _Pass()
    agg.add("__rows", F.count(F.lit(1)))
    names = [str(c) for c in mapped.frame.columns]
    for col in mapped.columns:
        for kind in ("missing", "blank", "bad"):
            agg.count(f"{kind}:{col}", quoted(SparkMapped.flag(kind, col)))
        if col in mapped.value_mapped:
            agg.count(f"mapped:{col}", quoted(SparkMapped.flag("mapped", col)))
            agg.count(f"unmatched:{col}", quoted(SparkMapped.flag("unmatched", col)))
    _version_aggs(agg, mapped.frame)
    checks: list[tuple[Rule, Any]] = []
    for rule in rules:
        checker = spark_check(rule, mapped, names)
        checker.prepare(agg)
        checks.append((rule, checker))
    agg.run(mapped.full)
    rows = int(agg["__rows"])
    conversion = _conversion(mapped, agg, spec, sample)
    stub = FrameView(pd.DataFrame(columns=names), conversion, sample, spec.id_column)
    stub.n = rows
    results = [checker.finish(agg, stub, sample) for _, checker in checks]
    version = _version(agg, mapped.frame, rows)
    summary = {
        "rows": rows,
        "renamed": mapped.renamed,
        "dropped_columns": mapped.dropped,
        "mapped_values": {c: int(agg[f"mapped:{c}"]) for c in mapped.value_mapped},
        "unmapped_values": _unmapped_values(mapped, agg),
        "conversion": {c: r.as_dict() for c, r in conversion.items()},
    }
    return SparkChecked(results, version, rows, summary, conversion)


@dataclass(frozen=True, eq=False)
class MappingCounts:
    """What one pass over mapped rows says: rows, the Spark data version, the mapping's
    conversion report and the raw values no value map named (``MappedFrame``'s shapes)."""

    rows: int
    version: str
    conversion: dict[str, ColumnConversion]
    unmapped_values: dict[str, list[str]]


def mapping_counts(mapped: SparkMapped, spec: Spec, sample: int = 20) -> MappingCounts:
    """Rows, data version and conversion counts of ``mapped`` in one Spark job (plus small
    jobs for the examples of columns with unparseable or unmapped values)."""
    agg = _Pass()
    agg.add("__rows", _count_all())
    for col in mapped.columns:
        for kind in ("missing", "blank", "bad"):
            agg.count(f"{kind}:{col}", quoted(SparkMapped.flag(kind, col)))
        if col in mapped.value_mapped:
            agg.count(f"unmatched:{col}", quoted(SparkMapped.flag("unmatched", col)))
    _version_aggs(agg, mapped.frame)
    agg.run(mapped.full)
    rows = int(agg["__rows"])
    return MappingCounts(
        rows,
        _version(agg, mapped.frame, rows),
        _conversion(mapped, agg, spec, sample),
        _unmapped_values(mapped, agg),
    )


def spark_data_version(frame: DataFrame) -> str:
    """The Spark engine's data version of ``frame`` (see ``_version_aggs``), in one job."""
    agg = _Pass()
    agg.add("__rows", _count_all())
    _version_aggs(agg, frame)
    agg.run(frame)
    return _version(agg, frame, int(agg["__rows"]))


def _count_all() -> Column:
    from pyspark.sql import functions as F

    return F.count(F.lit(1))


def _version_aggs(agg: _Pass, frame: DataFrame) -> None:
    """Aggregates of the data version: per row an xxhash64 of its values and null mask, then
    their XOR and their exact (decimal) sum over all rows: the same for the same multiset of
    rows in any order and any partitioning, and a changed, added or removed row changes it."""
    from pyspark.sql import functions as F

    cols = [quoted(str(c)) for c in frame.columns]
    mask: Column = F.lit(0).cast("bigint")
    for i, col in enumerate(cols[:62]):  # Spark's hash skips nulls: hash where they are
        mask = mask + F.when(col.isNull(), F.lit(1 << i).cast("bigint")).otherwise(0)
    row_hash = F.xxhash64(*cols, mask)
    agg.add("__xor", F.coalesce(F.bit_xor(row_hash), F.lit(0).cast("bigint")))
    agg.add("__sum", F.coalesce(F.sum(row_hash.cast("decimal(38,0)")), F.lit(0)))


def _version(agg: _Pass, frame: DataFrame, rows: int) -> str:
    digest = hashlib.sha256()
    header = [[f.name, f.dataType.simpleString()] for f in frame.schema.fields]
    digest.update(json.dumps(header).encode())
    digest.update(f"{rows}:{int(agg['__xor'])}:{int(agg['__sum'])}".encode())
    return digest.hexdigest()


def _conversion(
    mapped: SparkMapped, agg: _Pass, spec: Spec, sample: int
) -> dict[str, ColumnConversion]:
    """The mapping's conversion report (``MappedFrame.conversion_report`` shape)."""
    report = {}
    for col in mapped.columns:
        bad = int(agg[f"bad:{col}"])
        examples = pd.DataFrame({spec.id_column: [], "value": []})
        if bad:
            examples = _examples(mapped, col, spec.id_column)
        report[col] = ColumnConversion(
            column=col,
            source_dtype=mapped.source_dtypes[col],
            target_dtype=mapped.dtypes[col],
            missing=int(agg[f"missing:{col}"]),
            blanks=int(agg[f"blank:{col}"]),
            unparseable=bad,
            examples=examples,
        )
    return report


def _unmapped_values(mapped: SparkMapped, agg: _Pass) -> dict[str, list[str]]:
    """Per value-mapped column: up to 20 distinct raw values its map does not name."""
    out: dict[str, list[str]] = {}
    for col in mapped.value_mapped:
        if not int(agg[f"unmatched:{col}"]):
            out[col] = []
            continue
        raw = quoted(SparkMapped.flag("raw", col))
        values = (
            mapped.full.where(quoted(SparkMapped.flag("unmatched", col)))
            .select(raw.alias("v"))
            .distinct()
            .orderBy("v")
            .limit(20)
            .collect()
        )
        out[col] = [str(r["v"]) for r in values]
    return out


def _examples(mapped: SparkMapped, col: str, id_column: str) -> pd.DataFrame:
    """Up to 20 rows whose ``col`` could not be typed: the entity id and the raw value."""
    cols = [quoted(SparkMapped.flag("raw", col)).alias("value")]
    if id_column in mapped.columns:
        cols.insert(0, quoted(id_column).cast("string").alias(id_column))
    selected = mapped.full.where(quoted(SparkMapped.flag("bad", col))).select(*cols)
    rows = selected.limit(20).collect()
    return pd.DataFrame([[r[n] for n in selected.columns] for r in rows], columns=selected.columns)


def with_fix(rule: Rule, result: RuleResult) -> RuleResult:
    """``result`` with the rule's fix appended to a failure's message (as ``Rule.evaluate``)."""
    if result.passed or not rule.fix:
        return result
    return replace(result, message=f"{result.message}; {rule.fix}")


class _Check:
    """One rule's Spark form: the aggregates it needs, and its result from them."""

    def __init__(self, rule: Rule, mapped: SparkMapped, spec_id: str) -> None:
        self.rule = rule
        self.mapped = mapped
        self.id_column = spec_id
        self.key = rule.name

    def prepare(self, agg: _Pass) -> None:
        """Add the rule's aggregates to the shared pass."""

    def finish(self, agg: _Pass, stub: FrameView, sample: int) -> RuleResult:
        """The rule's result from the pass (and, when it failed, a sample job)."""
        return self.rule.evaluate(stub)

    def result(
        self, passed: bool, observed: Any, failing: int, cases: pd.DataFrame, message: str
    ) -> RuleResult:
        """A ``RuleResult`` as the pandas rule builds it (its fix appended on failure)."""
        return with_fix(
            self.rule,
            self.rule._result(passed, observed, self.rule.bound(), failing, cases, message),
        )

    def floats(self) -> Column:
        """The rule's column as doubles (text read as numbers where it can be)."""
        col = quoted(self.rule.col)
        kind = self.mapped.dtypes.get(self.rule.col, "")
        if kind in ("Int64", "float64"):
            return col.cast("double")
        if kind == "boolean":
            return col.cast("int").cast("double")
        if kind == "string":
            return col.try_cast("double")
        from pyspark.sql import functions as F

        return F.lit(None).cast("double")


class _RowCheck(_Check):
    """A row rule: a violation flag counted in the pass, a sample when it fails."""

    def violation(self) -> Column:
        raise NotImplementedError

    def prepare(self, agg: _Pass) -> None:
        agg.count(f"{self.key}:failing", self.violation())

    def observed(self, agg: _Pass, failing: int) -> Any:
        return failing

    def finish(self, agg: _Pass, stub: FrameView, sample: int) -> RuleResult:
        failing = int(agg[f"{self.key}:failing"])
        cases = self.cases(failing, sample)
        message = f"{failing} row(s) of {stub.n} violate: {self.rule.description}"
        return self.result(failing == 0, self.observed(agg, failing), failing, cases, message)

    def cases(self, failing: int, sample: int) -> pd.DataFrame:
        if not failing:
            return self.empty()
        return self.sample(self.violation(), sample)

    def sample(self, where: Column, size: int, order: bool = False) -> pd.DataFrame:
        spec_id = self.id_column
        idc = spec_id if spec_id in self.mapped.columns else None
        cols = [quoted(spec_id).alias(spec_id)] if idc else []
        column = self.rule.column
        if column and column != spec_id:
            cols.append(self.value().alias(column))
        selected = self.mapped.full.where(where).select(*cols)
        if order and idc:
            selected = selected.orderBy(spec_id)
        rows = selected.limit(size).collect() if size > 0 and cols else []
        names = selected.columns
        return pd.DataFrame([[r[n] for n in names] for r in rows], columns=names)

    def value(self) -> Column:
        """The rule's column as its failure sample shows it."""
        return quoted(self.rule.col)

    def empty(self) -> pd.DataFrame:
        names = [self.id_column]
        if self.rule.column and self.rule.column != self.id_column:
            names.append(self.rule.column)
        return pd.DataFrame(columns=names)


class _NotNull(_RowCheck):
    def violation(self) -> Column:
        return quoted(self.rule.col).isNull()


class _Unique(_RowCheck):
    """Duplicates come from a grouping job of their own (the id's values are all distinct)."""

    def prepare(self, agg: _Pass) -> None:
        pass

    def finish(self, agg: _Pass, stub: FrameView, sample: int) -> RuleResult:
        from pyspark.sql import functions as F

        col = self.rule.col
        groups = (
            self.mapped.frame.where(quoted(col).isNotNull())
            .groupBy(quoted(col).alias("__key"))
            .count()
            .where(F.col("count") > 1)
        )
        found = groups.agg(
            F.count(F.lit(1)).alias("values"), F.coalesce(F.sum("count"), F.lit(0)).alias("rows")
        ).collect()[0]
        failing, values = int(found["rows"]), int(found["values"])
        cases = self.empty()
        if failing:
            dupes = groups.select(F.col("__key")).limit(sample)
            keys = [r["__key"] for r in dupes.collect()]
            cases = self.sample(quoted(col).isin(keys), sample, order=True)
        message = f"{failing} row(s) of {stub.n} violate: {self.rule.description}"
        return self.result(failing == 0, values, failing, cases, message)


class _Range(_RowCheck):
    def violation(self) -> Column:
        from pyspark.sql import functions as F

        rule = self.rule
        assert isinstance(rule, RangeRule)
        values = self.floats()
        bad = values < F.lit(float(rule.low))
        if rule.high is not None:
            bad = bad | (values > F.lit(float(rule.high)))
        return F.coalesce(bad, F.lit(False))

    def prepare(self, agg: _Pass) -> None:
        from pyspark.sql import functions as F

        super().prepare(agg)
        agg.add(f"{self.key}:min", F.min(self.floats()))
        agg.add(f"{self.key}:max", F.max(self.floats()))

    def observed(self, agg: _Pass, failing: int) -> Any:
        low, high = agg[f"{self.key}:min"], agg[f"{self.key}:max"]
        return {
            "min": None if low is None else _py(low),
            "max": None if high is None else _py(high),
            "failing": failing,
        }


class _Set(_RowCheck):
    def violation(self) -> Column:
        from pyspark.sql import functions as F

        rule = self.rule
        assert isinstance(rule, SetRule)
        if rule.numeric:
            values = self.floats()
            allowed = [float(v) for v in rule.allowed]
            outside = values.isNotNull() & ~values.isin(allowed)
        else:
            col = quoted(rule.col)
            outside = col.isNotNull() & ~col.isin([str(v) for v in rule.allowed])
        if rule.col in self.mapped.lost:
            outside = outside | quoted(SparkMapped.flag("lost", rule.col))
        return F.coalesce(outside, F.lit(False))

    def value(self) -> Column:
        """Values as text, the raw text where the mapping lost them (as the pandas rule)."""
        return self.shown() if self.rule.col in self.mapped.lost else quoted(self.rule.col)

    def shown(self) -> Column:
        from pyspark.sql import functions as F

        col = self.rule.col
        text = quoted(col).cast("string")
        if col in self.mapped.lost:
            lost = quoted(SparkMapped.flag("lost", col))
            return F.when(lost, quoted(SparkMapped.flag("raw", col))).otherwise(text)
        return text

    def finish(self, agg: _Pass, stub: FrameView, sample: int) -> RuleResult:
        from pyspark.sql import functions as F

        failing = int(agg[f"{self.key}:failing"])
        message = f"{failing} row(s) of {stub.n} violate: {self.rule.description}"
        cases = self.cases(failing, sample)
        result = self.rule._result(failing == 0, {}, self.rule.bound(), failing, cases, message)
        if result.passed:
            return result
        counts = (
            self.mapped.full.where(self.violation())
            .groupBy(self.shown().alias("v"))
            .count()
            .orderBy(F.col("count").desc(), F.col("v"))
            .limit(10)
            .collect()
        )
        observed = {str(r["v"]): int(r["count"]) for r in counts}
        values = ", ".join(repr(v) for v in observed)
        return with_fix(
            self.rule,
            replace(
                result,
                observed=observed,
                message=f"{result.message}; values outside the set: {values}",
            ),
        )


class _Mean(_Check):
    def prepare(self, agg: _Pass) -> None:
        from pyspark.sql import functions as F

        agg.add(f"{self.key}:mean", F.avg(self.floats()))

    def finish(self, agg: _Pass, stub: FrameView, sample: int) -> RuleResult:
        rule = self.rule
        assert isinstance(rule, MeanRangeRule)
        raw = agg[f"{self.key}:mean"]
        mean = math.nan if raw is None else float(raw)
        passed = not math.isnan(mean) and rule.low <= mean <= rule.high
        msg = f"mean of {rule.column} is {mean:.4g}, bound [{rule.low}, {rule.high}]"
        return self.result(passed, _py(mean), 0, self.no_cases(), msg)

    def no_cases(self) -> pd.DataFrame:
        return pd.DataFrame(columns=[self.id_column])


class _NullRate(_RowCheck):
    def violation(self) -> Column:
        return quoted(self.rule.col).isNull()

    def finish(self, agg: _Pass, stub: FrameView, sample: int) -> RuleResult:
        rule = self.rule
        assert isinstance(rule, NullRateRule)
        count = int(agg[f"{self.key}:failing"])
        rate = count / stub.n if stub.n else 0.0
        passed = rate <= rule.limit
        cases = self.empty() if passed else self.sample(self.violation(), sample)
        msg = f"{count} null(s) in {rule.column} = rate {rate:.4f}, limit {rule.limit}"
        return self.result(passed, rate, 0 if passed else count, cases, msg)


class _Types(_Check):
    """Spark types against the spec's dtypes (after mapping they always match)."""

    def finish(self, agg: _Pass, stub: FrameView, sample: int) -> RuleResult:
        rule = self.rule
        assert isinstance(rule, ColumnTypesRule)
        types = {f.name: f.dataType.simpleString() for f in self.mapped.frame.schema.fields}
        wrong = {
            c: types[c]
            for c, expected in rule.dtypes.items()
            if c in types and not _compatible(types[c], expected)
        }
        failing = 0
        for col in wrong:
            target = "double" if rule.dtypes[col] != "string" else "string"
            value = quoted(col)
            bad = value.isNotNull() & value.try_cast(target).isNull()
            failing += int(self.mapped.frame.where(bad).count())
        msg = (
            "; ".join(f"{c} has dtype {d}, expected {rule.dtypes[c]}" for c, d in wrong.items())
            or "all present columns have canonical dtypes"
        )
        bound = {c: rule.dtypes[c] for c in wrong} if wrong else dict(rule.dtypes)
        return rule._result(not wrong, wrong, bound, failing, stub.cases([], None), msg)


def _compatible(spark_type: str, expected: str) -> bool:
    if expected.startswith("datetime64"):
        return spark_type in ("timestamp", "timestamp_ntz")
    return spark_type in _SPARK_KINDS.get(expected, (expected,))


_CHECKS: dict[type, type[_Check]] = {
    NotNullRule: _NotNull,
    UniqueRule: _Unique,
    RangeRule: _Range,
    SetRule: _Set,
    MeanRangeRule: _Mean,
    NullRateRule: _NullRate,
    ColumnTypesRule: _Types,
}


def spark_check(rule: Rule, mapped: SparkMapped, names: list[str]) -> _Check:
    """The Spark form of ``rule``; rules reading no data (or a missing column) use their own
    pandas code on a row-less view."""
    spec_id = mapped.id_column
    if isinstance(rule, _NO_DATA) or (rule.column is not None and rule.column not in names):
        return _Check(rule, mapped, spec_id)
    check = _CHECKS.get(type(rule))
    if check is None:
        raise EngineError(
            f"contract rule {rule.name!r} ({type(rule).__name__}) has no Spark form; run it "
            "with CHURN_ENGINE=pandas, or add it to core/engines/spark_contract.py"
        )
    return check(rule, mapped, spec_id)


def _py(value: Any) -> Any:
    """A JSON-safe number like the pandas engine's (NaN -> None, whole floats stay floats)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return float(value) if isinstance(value, int | float) else value
