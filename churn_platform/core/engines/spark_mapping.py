"""``core.mapping`` on Spark: the same renames, value maps, blanks -> null and types.

``map_on_spark`` gives the same canonical columns and values as ``core.mapping.apply_mapping``
on the same input. The checks on column names (unknown mapping keys, clashes, missing
columns) are ``core.mapping``'s own, run on the column names alone. Nothing is computed here:
the result holds lazy columns plus, per spec column, flags (blank, unparseable, a value the
value map did not cover) whose counts ``spark_contract`` sums in its one pass over the data.

Types: ``string`` -> StringType, ``Int64`` -> LongType, ``float64`` -> DoubleType,
``boolean`` -> BooleanType, dates -> TimestampType (UTC session time zone). Text is parsed as
the pandas engine parses it (stripped; ``NULL_TOKENS`` blank; ``TRUE_TOKENS``/``FALSE_TOKENS``;
a fraction in an integer column is unparseable). Known differences on exotic input: a date is
read with Spark's ISO parser (pandas infers one format per column); a double read as text
prints as Java does (``1.0E20``); timestamps keep microseconds (Spark's precision); a CSV is
read by Spark's reader with its defaults (no multi-line quoted cells, no ``read_options``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from churn_platform.core.mapping import (
    FALSE_TOKENS,
    NULL_TOKENS,
    TRUE_TOKENS,
    ColumnMapping,
    DataSourceError,
    _check_required,
    _renamed,
    _select_columns,
)
from churn_platform.core.spec import Spec

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

FLAG = "__churn_"  # prefix of the hidden flag columns (never in ``SparkMapped.frame``)


def quoted(name: str) -> Column:
    """Column ``name`` (dots, spaces and backticks taken literally)."""
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


def read_source(spark: SparkSession, source: Any) -> DataFrame:
    """``source`` as a Spark DataFrame: as is, from pandas, or a CSV (all text) / Parquet file."""
    from pyspark.sql import DataFrame as SparkFrame

    if isinstance(source, SparkFrame):
        return source
    if isinstance(source, pd.DataFrame):
        return spark.createDataFrame(source)
    path = Path(str(source))
    if path.suffix.lower() == ".csv":
        # every cell as text and no nulls, empty cells "" (as FileSource reads a CSV): the
        # mapping counts them as blanks and types them
        return spark.read.csv(str(path), header=True, inferSchema=False).na.fill("")
    if path.suffix.lower() in (".parquet", ".pq"):
        return _read_parquet(spark, path)
    raise DataSourceError(f"{path}: the Spark engine reads .csv or .parquet files; convert it")


def _read_parquet(spark: SparkSession, path: Path) -> DataFrame:
    """A Parquet file or folder; nanosecond timestamps (what pandas writes, which Spark cannot
    read as timestamps) are read as numbers and turned into microsecond timestamps."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    from pyspark.sql import functions as F

    schema = ds.dataset(str(path), format="parquet").schema
    nanos = {f.name for f in schema if pa.types.is_timestamp(f.type) and f.type.unit == "ns"}
    if nanos:
        spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
    frame = spark.read.parquet(str(path))
    if not nanos:
        return frame
    cols = []
    for name in frame.columns:
        if name in nanos:
            escaped = name.replace("`", "``")
            cols.append(F.expr(f"timestamp_micros(`{escaped}` div 1000)").alias(name))
        else:
            cols.append(quoted(name))
    return frame.select(*cols)


@dataclass(frozen=True, eq=False)
class SparkMapped:
    """A Spark frame in the spec's columns and types, and how to account for the mapping.

    ``full`` holds the canonical columns plus hidden flag columns; ``frame`` only the
    canonical (and kept extra) columns. ``columns`` are the spec columns present;
    ``value_mapped`` the columns a value map applied to; ``lost`` the typed columns whose
    unmapped raw values typing can lose. The ``raw`` flag of a column is its text as read.
    """

    full: DataFrame
    frame: DataFrame
    columns: list[str]
    dtypes: dict[str, str]
    source_dtypes: dict[str, str]
    renamed: dict[str, str]
    dropped: list[str]
    value_mapped: list[str]
    id_column: str
    lost: list[str] = field(default_factory=list)

    @staticmethod
    def flag(kind: str, column: str) -> str:
        """Name of a hidden flag column (kind: missing, blank, bad, mapped, unmatched, lost,
        raw)."""
        return f"{FLAG}{kind}__{column}"


def map_on_spark(
    raw: DataFrame,
    mapping: ColumnMapping | Mapping[str, Any] | None = None,
    *,
    spec: Spec,
    required: Sequence[str] | None = None,
) -> SparkMapped:
    """Rename, translate values and type ``raw`` as ``core.mapping.apply_mapping`` does.

    The name checks raise the same ``DataSourceError`` messages (they run on the names).
    """
    if not isinstance(mapping, ColumnMapping):
        mapping = ColumnMapping.from_dict(mapping, spec)
    mapping = mapping.over(spec)
    names = pd.DataFrame(columns=list(raw.columns))
    renamed_names, renamed = _renamed(names, mapping, spec)
    _check_required(renamed_names, spec.all_columns if required is None else required, spec)
    selected, dropped = _select_columns(renamed_names, mapping, spec)
    back = {new: old for old, new in renamed.items()}
    source_types = {str(f.name): f.dataType.simpleString() for f in raw.schema.fields}
    frame = raw.select(*[quoted(back.get(c, c)).alias(c) for c in selected.columns])
    present = [c for c in spec.all_columns if c in selected.columns]
    sources = {c: source_types[back.get(c, c)] for c in present}
    typed, flags, value_mapped, lost = _typed(present, sources, mapping, spec)
    outputs = [typed[c].alias(c) if c in typed else quoted(c) for c in frame.columns]
    full = frame.select(*outputs, *flags)
    canonical = full.select(*[quoted(c) for c in frame.columns])
    return SparkMapped(
        full,
        canonical,
        present,
        {c: spec.dtypes[c] for c in present},
        sources,
        renamed,
        dropped,
        value_mapped,
        spec.id_column,
        lost,
    )


def _typed(
    present: list[str], sources: dict[str, str], mapping: ColumnMapping, spec: Spec
) -> tuple[dict[str, Column], list[Column], list[str], list[str]]:
    """Per spec column: the typed value, and the flag columns that account for it."""
    from pyspark.sql import functions as F

    flags: list[Column] = []
    typed: dict[str, Column] = {}
    value_mapped, lost = [], []
    for col in present:
        value, source_type = quoted(col), sources[col]
        missing = value.isNull()
        if source_type in ("float", "double"):  # NaN is pandas' null
            missing = missing | F.isnan(value)
            value = F.when(~F.isnan(value), value)
        flags.append(missing.alias(SparkMapped.flag("missing", col)))
        flags.append(quoted(col).cast("string").alias(SparkMapped.flag("raw", col)))
        value_map = mapping.values.get(col)
        if value_map is not None:
            value, matched = _map_values(value, source_type, value_map)
            source_type = "string"
            value_mapped.append(col)
            flags.append(matched.alias(SparkMapped.flag("mapped", col)))
            unmatched = ~matched & quoted(col).isNotNull()
            flags.append(unmatched.alias(SparkMapped.flag("unmatched", col)))
        out, blank, bad = convert(value, source_type, spec.dtypes[col])
        typed[col] = out
        flags.append(blank.alias(SparkMapped.flag("blank", col)))
        flags.append(bad.alias(SparkMapped.flag("bad", col)))
        if value_map is not None and spec.dtypes[col] != "string":
            lost.append(col)
            flags.append(_lost(quoted(col), out, value_map).alias(SparkMapped.flag("lost", col)))
    return typed, flags, value_mapped, lost


def _map_values(value: Column, source_type: str, value_map: Mapping[Any, Any]) -> tuple[Any, Any]:
    """The column through ``value_map`` as text (by value, then by text), and the match flag."""
    from pyspark.sql import functions as F

    numeric = _is_numeric(source_type) or source_type == "boolean"
    text = value.cast("string")
    out: Any = None
    matched: Any = F.lit(False)
    for key, target in value_map.items():
        if numeric and isinstance(key, int | float) and not isinstance(key, bool):
            hit = (value == F.lit(key)) | (text == F.lit(str(key)))
        else:
            hit = text == F.lit(str(key))
        hit = F.coalesce(hit, F.lit(False))
        shown = F.lit(None).cast("string") if target is None else F.lit(str(target))
        out = F.when(hit, shown) if out is None else out.when(hit, shown)
        matched = matched | hit
    mapped = text if out is None else out.otherwise(text)
    return mapped, matched


def _lost(raw: Column, out: Column, value_map: Mapping[Any, Any]) -> Column:
    """A non-blank raw value the map did not cover and typing turned null."""
    from pyspark.sql import functions as F

    text = raw.cast("string")
    keys = [str(k) for k in value_map]
    null_like = F.lower(_strip(text)).isin(list(NULL_TOKENS))
    covered = text.isin(keys) if keys else F.lit(False)
    return F.coalesce(raw.isNotNull() & out.isNull() & ~covered & ~null_like, F.lit(False))


def _is_numeric(spark_type: str) -> bool:
    return spark_type in ("tinyint", "smallint", "int", "bigint", "float", "double") or (
        spark_type.startswith("decimal")
    )


def _strip(text: Column) -> Column:
    from pyspark.sql import functions as F

    return F.regexp_replace(text, r"(?U)^\s+|\s+$", "")


def convert(value: Column, source_type: str, target: str) -> tuple[Column, Column, Column]:
    """``value`` (of Spark type ``source_type``) as ``target``: (typed, blank flag, bad flag).

    As ``core.mapping.convert_column``: text is stripped, null-like text is blank (null, not
    an error), text that cannot be read as ``target`` is unparseable (null, an error).
    """
    from pyspark.sql import functions as F

    false = F.lit(False)
    if target == "string":
        if source_type in ("float", "double"):  # whole numbers without ".0", as pandas
            whole = value == F.rint(value)
            text = F.when(whole, value.try_cast("bigint").cast("string")).otherwise(
                value.cast("string")
            )
        else:
            text = value.cast("string")
        blank = F.coalesce(text.rlike(r"(?U)^\s*$"), false)
        return F.when(blank, F.lit(None).cast("string")).otherwise(text), blank, false
    if target in ("Int64", "float64"):
        return _to_number(value, source_type, target)
    if target == "boolean":
        if source_type == "boolean":
            return value, false, false
        stripped = _strip(value.cast("string"))
        lower = F.lower(stripped)
        blank = F.coalesce(lower.isin(list(NULL_TOKENS)), false)
        parsed = F.when(lower.isin(list(TRUE_TOKENS)), F.lit(True)).when(
            lower.isin(list(FALSE_TOKENS)), F.lit(False)
        )
        bad = value.isNotNull() & ~blank & parsed.isNull()
        return parsed, blank, F.coalesce(bad, false)
    if target.startswith("datetime64"):
        if source_type in ("timestamp", "timestamp_ntz", "date"):
            return value.cast("timestamp"), false, false
        stripped = _strip(value.cast("string"))
        blank = F.coalesce(F.lower(stripped).isin(list(NULL_TOKENS)), false)
        parsed = F.when(~blank, stripped.try_cast("timestamp"))
        bad = F.coalesce(value.isNotNull() & ~blank & parsed.isNull(), false)
        return parsed, blank, bad
    raise DataSourceError(
        f"the Spark engine cannot type a column as {target!r}; use CHURN_ENGINE=pandas"
    )


def _to_number(value: Column, source_type: str, target: str) -> tuple[Column, Column, Column]:
    from pyspark.sql import functions as F

    false = F.lit(False)
    blank: Column = false
    bad: Column = false
    if source_type == "boolean":
        number = value.cast("int").cast("double")
    elif _is_numeric(source_type):
        if target == "Int64" and source_type in ("tinyint", "smallint", "int", "bigint"):
            return value.cast("bigint"), false, false
        number = value.cast("double")
    else:
        stripped = _strip(value.cast("string"))
        blank = F.coalesce(F.lower(stripped).isin(list(NULL_TOKENS)), false)
        number = F.when(~blank, stripped.try_cast("double"))
        bad = F.coalesce(value.isNotNull() & ~blank & number.isNull(), false)
    if target == "Int64":
        frac = F.coalesce(number != F.rint(number), false)
        return F.when(~frac, number).try_cast("bigint"), blank, bad | frac
    return number, blank, bad
