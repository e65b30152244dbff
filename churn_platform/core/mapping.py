"""Map a user's table onto the columns of its table spec.

A source hands over its rows as they are (a CSV read as text, a Parquet file, a SQL
table). ``apply_mapping`` renames the user's columns to the spec's names (each
feature's ``source``), translates the user's labels (a feature's ``values``, the
target's ``positive``/``negative`` -> 1/0, plus an explicit ``ColumnMapping`` merged
over them), and converts every spec column to its dtype in ``spec.dtypes``. Conversion never
crashes: a blank cell becomes a null, a value that cannot be read as the column's
type becomes a null too, and both are counted per column in ``conversion_report``
(with a few example rows) so the data contract can fail on them with evidence.

Values that the mapping does not mention are left as they are; the contract then
flags an unknown category instead of this module guessing.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from churn_platform.core import schema as s
from churn_platform.core.spec import Spec

# Text that means "no value" in a typed (numeric, date, boolean) column.
NULL_TOKENS: frozenset[str] = frozenset({"", "na", "n/a", "nan", "null", "none", "nat", "<na>"})
TRUE_TOKENS: frozenset[str] = frozenset({"true", "t", "yes", "y", "1", "1.0"})
FALSE_TOKENS: frozenset[str] = frozenset({"false", "f", "no", "n", "0", "0.0"})
EXAMPLES_PER_COLUMN = 20


class DataSourceError(ValueError):
    """A source or its mapping cannot produce canonical rows; the message says what to change."""


@dataclass(frozen=True)
class ColumnMapping:
    """How a user's table maps onto the spec's columns (on top of the spec's own mapping).

    ``columns``: user column name -> spec column name (columns already named like the
    spec need no entry). ``values``: spec column -> {user value: value}, applied after
    renaming and before type conversion, so ``{"Yes": "1"}`` and ``{"Yes": 1}`` both
    give churned = 1. ``keep_extra_columns``: keep columns the spec does not name
    (default: drop them). ``spec`` (required, keyword): the spec whose columns the names
    are checked against.
    """

    columns: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, Mapping[Any, Any]] = field(default_factory=dict)
    keep_extra_columns: bool = False
    spec: Spec = field(kw_only=True, compare=False, repr=False)

    def __post_init__(self) -> None:
        # private copies: a caller mutating its dicts later must not change this mapping
        object.__setattr__(self, "columns", dict(self.columns))
        object.__setattr__(self, "values", {k: dict(v) for k, v in self.values.items()})
        all_columns = self.spec.all_columns
        unknown = sorted(set(self.columns.values()) - set(all_columns))
        if unknown:
            raise DataSourceError(
                f"mapping 'columns' maps onto unknown canonical column(s) {unknown}; "
                f"the targets must be among the spec's columns {list(all_columns)}"
            )
        targets: dict[str, list[str]] = {}
        for user, canonical in self.columns.items():
            targets.setdefault(canonical, []).append(user)
        clashes = {c: users for c, users in targets.items() if len(users) > 1}
        if clashes:
            raise DataSourceError(
                f"mapping 'columns' maps several user columns onto one canonical column: "
                f"{clashes}; keep one entry per canonical column"
            )
        unknown_values = sorted(set(self.values) - set(all_columns))
        if unknown_values:
            raise DataSourceError(
                f"mapping 'values' names unknown canonical column(s) {unknown_values}; "
                f"value maps are keyed by the spec's column name, one of {list(all_columns)}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, spec: Spec) -> ColumnMapping:
        """Build from ``{"columns": {...}, "values": {...}, "keep_extra_columns": bool}``."""
        data = dict(data or {})
        unknown = sorted(set(data) - {"columns", "values", "keep_extra_columns"})
        if unknown:
            raise DataSourceError(
                f"mapping has unknown key(s) {unknown}; allowed keys are "
                "'columns', 'values' and 'keep_extra_columns'"
            )
        return cls(
            columns=dict(data.get("columns") or {}),
            values={k: dict(v) for k, v in (data.get("values") or {}).items()},
            keep_extra_columns=bool(data.get("keep_extra_columns", False)),
            spec=spec,
        )

    @classmethod
    def from_json(cls, text: str, spec: Spec) -> ColumnMapping:
        """Build from a JSON string of the ``from_dict`` shape (empty string: no mapping)."""
        if not text.strip():
            return cls(spec=spec)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataSourceError(f"mapping JSON is not valid JSON ({exc}); fix the text") from exc
        if not isinstance(data, dict):
            raise DataSourceError("mapping JSON must be an object with 'columns' and 'values'")
        return cls.from_dict(data, spec)

    def over(self, spec: Spec) -> ColumnMapping:
        """The spec's own mapping (``Spec.mapping``) with this one merged over it.

        An entry here wins: a rename onto a column replaces the spec's source for it, and a
        value map extends (and on a shared key overrides) the spec's map of that column.
        """
        base = spec.mapping()
        ours = set(self.columns.values())
        columns = {
            u: c for u, c in base["columns"].items() if c not in ours and u not in self.columns
        }
        columns.update(self.columns)
        values: dict[str, dict[Any, Any]] = {k: dict(v) for k, v in base["values"].items()}
        for col, value_map in self.values.items():
            values[col] = {**values.get(col, {}), **value_map}
        return ColumnMapping(columns, values, self.keep_extra_columns, spec=spec)

    def to_dict(self) -> dict[str, Any]:
        """The mapping as plain JSON-safe data (the ``from_dict`` shape)."""
        return {
            "columns": dict(self.columns),
            "values": {k: dict(v) for k, v in self.values.items()},
            "keep_extra_columns": self.keep_extra_columns,
        }


@dataclass(frozen=True, eq=False)  # holds DataFrames: compare fields, not objects
class ColumnConversion:
    """What converting one column to its canonical dtype did."""

    column: str
    source_dtype: str
    target_dtype: str
    missing: int  # already null in the source
    blanks: int  # empty or null-like text ("", "NA", "null", ...) turned null
    unparseable: int  # values that could not be read as target_dtype, turned null
    examples: pd.DataFrame  # up to 20 unparseable rows: row, customer_id, raw value

    @property
    def nulls_added(self) -> int:
        """Nulls that conversion created (blanks plus unparseable values)."""
        return self.blanks + self.unparseable

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe counts and up to 5 example raw values."""
        return {
            "source_dtype": self.source_dtype,
            "target_dtype": self.target_dtype,
            "missing": self.missing,
            "blanks": self.blanks,
            "unparseable": self.unparseable,
            "examples": [str(v) for v in self.examples.get("value", pd.Series()).head(5)],
        }


@dataclass(frozen=True, eq=False)  # holds DataFrames: compare fields, not objects
class MappedFrame:
    """A frame in canonical names and dtypes, with a record of how it got there."""

    frame: pd.DataFrame
    conversion_report: dict[str, ColumnConversion]
    renamed: dict[str, str]
    dropped_columns: list[str]
    mapped_values: dict[str, int]  # canonical column -> cells whose value the mapping changed
    unmapped_values: dict[str, list[str]]  # canonical column -> distinct values not in its map
    # typed (non-text) column -> rows (``row``, raw ``value``) whose value its map did not
    # cover and typing could not read: a target's "maybe" the spec does not map
    unmapped_cells: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def unparseable_total(self) -> int:
        """Cells that could not be read as their column's type, over all columns."""
        return sum(c.unparseable for c in self.conversion_report.values())

    def summary(self) -> dict[str, Any]:
        """JSON-safe account of the mapping step, for metadata and reports."""
        return {
            "rows": len(self.frame),
            "renamed": self.renamed,
            "dropped_columns": self.dropped_columns,
            "mapped_values": self.mapped_values,
            "unmapped_values": self.unmapped_values,
            "conversion": {c: r.as_dict() for c, r in self.conversion_report.items()},
        }


def apply_mapping(
    raw: pd.DataFrame,
    mapping: ColumnMapping | Mapping[str, Any] | None = None,
    *,
    required: Sequence[str] | None = None,
    spec: Spec,
) -> MappedFrame:
    """Rename, translate values and convert ``raw`` to the dtypes of ``spec``.

    The spec's own mapping (``Spec.mapping``: sources, value maps, the target's labels ->
    1/0) applies, with ``mapping`` (a ``ColumnMapping`` or its ``from_dict`` shape) merged
    over it. Raises ``DataSourceError`` when a mapping key names a column the frame lacks,
    when a column name would appear twice, or when a ``required`` column (default: every
    spec column) is missing after renaming (pass ``required=()`` to let the contract
    report it instead); the message names the spec key that sets the source column.
    """
    if not isinstance(mapping, ColumnMapping):
        mapping = ColumnMapping.from_dict(mapping, spec)
    mapping = mapping.over(spec)
    frame, renamed = _renamed(raw, mapping, spec)
    _check_required(frame, spec.all_columns if required is None else required, spec)
    frame, dropped = _select_columns(frame, mapping, spec)
    return _converted(frame, mapping, spec, renamed, dropped)


def map_values_and_types(
    frame: pd.DataFrame, spec: Spec, mapping: ColumnMapping | None = None
) -> MappedFrame:
    """``frame``, already in the spec's column names, through the value maps and typing of
    ``apply_mapping`` (its steps after renaming; ``frame`` is not changed).

    For callers that resolve names themselves: the model server maps the cells of a
    request's records this way. ``mapping`` is the merged mapping to apply (default: the
    spec's own, ``ColumnMapping(spec=spec).over(spec)``; pass it in to build it once).
    """
    merged = mapping if mapping is not None else ColumnMapping(spec=spec).over(spec)
    return _converted(frame.copy(), merged, spec, {}, [])


def _renamed(
    raw: pd.DataFrame, mapping: ColumnMapping, spec: Spec
) -> tuple[pd.DataFrame, dict[str, str]]:
    """``raw`` with the mapping's renames applied, and the renames that took effect."""
    found = [str(c) for c in raw.columns]
    if len(set(found)) != len(found):
        dupes = sorted({c for c in found if found.count(c) > 1})
        raise DataSourceError(f"the table has duplicate column name(s) {dupes}; rename them")
    # a spec's source that is absent is a missing column (reported below, naming its key);
    # an explicit mapping key that is absent is a typo in the mapping
    spec_sources = {spec.source_of(c) for c in spec.all_columns}
    absent = [c for c in mapping.columns if c not in found and c not in spec_sources]
    if absent:
        hints = _close_matches(absent, found)
        raise DataSourceError(
            f"mapping 'columns' names column(s) {absent} that the table does not have"
            f"{hints}; columns found: {found}. Fix the key(s) in the mapping."
        )
    renamed = {u: c for u, c in mapping.columns.items() if u != c and u in found}
    clash = {u: c for u, c in renamed.items() if c in found and c not in renamed}
    if clash:
        pairs = ", ".join(f"{u!r} -> {c!r}" for u, c in clash.items())
        raise DataSourceError(
            f"mapping renames {pairs}, but the table already has a column named "
            f"{sorted(clash.values())}; drop one of them or map the existing one elsewhere"
        )
    frame = raw.rename(columns=renamed)
    frame.columns = [str(c) for c in frame.columns]
    return frame, renamed


def _check_required(frame: pd.DataFrame, required: Sequence[str], spec: Spec) -> None:
    """Raise ``DataSourceError`` naming a mapping entry for each missing ``required`` column."""
    missing = [c for c in required if c not in frame.columns]
    if not missing:
        return
    unmapped = [c for c in frame.columns if c not in spec.all_columns]
    suggestions = []
    for col in missing:
        close = difflib.get_close_matches(col, unmapped, n=1, cutoff=0.4)
        suggestions.append(f'"{close[0] if close else "<your column>"}": "{col}"')
    raise DataSourceError(
        f"required canonical column(s) {missing} missing after mapping; columns found: "
        f"{list(frame.columns)}. Add a mapping entry for each, e.g. "
        f"columns: {{{', '.join(suggestions)}}}; {describe_missing(spec, missing)}"
    )


def _select_columns(
    frame: pd.DataFrame, mapping: ColumnMapping, spec: Spec
) -> tuple[pd.DataFrame, list[str]]:
    """Spec columns first in spec order, extra columns after (or dropped, and named)."""
    all_columns = spec.all_columns
    extra = [c for c in frame.columns if c not in all_columns]
    dropped: list[str] = []
    if extra and not mapping.keep_extra_columns:
        dropped = extra
        frame = frame.drop(columns=extra)
    canonical = [c for c in all_columns if c in frame.columns]
    frame = frame[canonical + [c for c in frame.columns if c not in all_columns]].copy()
    return frame, dropped


def _converted(
    frame: pd.DataFrame,
    mapping: ColumnMapping,
    spec: Spec,
    renamed: dict[str, str],
    dropped: list[str],
) -> MappedFrame:
    """Apply the value maps, then convert every spec column to its dtype, reporting both."""
    dtypes = spec.dtypes
    mapped_values: dict[str, int] = {}
    unmapped_values: dict[str, list[str]] = {}
    before: dict[str, pd.Series] = {}
    for col, value_map in mapping.values.items():
        if col not in frame.columns:
            continue
        if dtypes[col] != "string":  # typing may lose an unmapped value: keep it to report
            before[col] = frame[col]
        frame[col], mapped_values[col], unmapped_values[col] = _map_values(frame[col], value_map)

    id_column = spec.id_column
    ids = frame[id_column] if id_column in frame.columns else None
    report: dict[str, ColumnConversion] = {}
    for col in [c for c in spec.all_columns if c in frame.columns]:
        frame[col], report[col] = convert_column(frame[col], dtypes[col], ids)
        if id_column != s.CUSTOMER_ID:  # convert_column labels its examples customer_id
            examples = report[col].examples.rename(columns={s.CUSTOMER_ID: id_column})
            report[col] = replace(report[col], examples=examples)
    cells = {
        col: lost
        for col, series in before.items()
        if len(lost := _lost_cells(series, frame[col], mapping.values[col]))
    }
    frame = frame.reset_index(drop=True)
    return MappedFrame(frame, report, renamed, dropped, mapped_values, unmapped_values, cells)


def spec_key_of(spec: Spec, column: str) -> str:
    """The spec key that names ``column``'s source column (what to fix when it is absent)."""
    if column == spec.id_column:
        return "entity_id.source"
    if column == spec.target_column:
        return "target.source"
    return f"features.{column}.source"


def describe_missing(spec: Spec, missing: Sequence[str]) -> str:
    """One clause per missing spec column: the source column the spec reads and its key."""
    parts = [
        f"the spec reads {c!r} from source column {spec.source_of(c)!r} ({spec_key_of(spec, c)})"
        for c in missing
        if c in spec.all_columns
    ]
    if not parts:
        return ""
    return (
        "; ".join(parts)
        + ": add the column to the data, point the key at the column that holds it, "
        "or drop the feature from the spec"
    )


def _lost_cells(before: pd.Series, after: pd.Series, value_map: Mapping[Any, Any]) -> pd.DataFrame:
    """Rows whose non-blank raw value the map did not cover and typing turned null."""
    lost = after.isna().to_numpy(dtype=bool) & before.notna().to_numpy(dtype=bool)
    if not lost.any():
        return pd.DataFrame({"row": np.array([], dtype=np.int64), "value": []})
    rows = np.flatnonzero(lost)
    text = before.iloc[rows].astype(str)
    keep = ~text.isin({str(k) for k in value_map}) & ~text.str.strip().str.lower().isin(NULL_TOKENS)
    keep_mask = keep.to_numpy(dtype=bool)
    return pd.DataFrame(
        {"row": rows[keep_mask].astype(np.int64), "value": text.to_numpy(dtype=object)[keep_mask]}
    )


def _close_matches(names: Sequence[str], candidates: Sequence[str]) -> str:
    pairs = []
    for name in names:
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        if close:
            pairs.append(f"{name!r} (did you mean {close[0]!r}?)")
    return f" [{'; '.join(pairs)}]" if pairs else ""


def _map_values(
    series: pd.Series, value_map: Mapping[Any, Any]
) -> tuple[pd.Series, int, list[str]]:
    """Translate values through ``value_map`` (matching by value, then by its text)."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    by_text = {str(k): v for k, v in value_map.items()}
    new_uniques = np.empty(len(uniques), dtype=object)
    changed = np.zeros(len(uniques), dtype=bool)
    unmapped: list[str] = []
    for i, value in enumerate(uniques):
        if value in value_map:
            new_uniques[i], changed[i] = value_map[value], True
        elif str(value) in by_text:
            new_uniques[i], changed[i] = by_text[str(value)], True
        else:
            new_uniques[i] = value
            unmapped.append(str(value))
    out = np.empty(len(series), dtype=object)
    valid = codes >= 0
    out[valid] = new_uniques[codes[valid]]
    out[~valid] = None
    n_changed = int(changed[codes[valid]].sum()) if len(uniques) else 0
    return pd.Series(out, index=series.index, name=series.name), n_changed, sorted(unmapped)[:20]


def convert_column(
    series: pd.Series, target: str, ids: pd.Series | None = None
) -> tuple[pd.Series, ColumnConversion]:
    """Convert one column to ``target`` dtype, counting blanks and unparseable values.

    ``ids`` (the customer_id column, same index) labels the example rows.
    """
    source_dtype = str(series.dtype)
    missing = int(series.isna().sum())
    if target == "string":
        out, blank, bad = _to_string(series)
    elif target in ("Int64", "float64"):
        out, blank, bad = _to_number(series, target)
    elif target == "boolean":
        out, blank, bad = _to_boolean(series)
    elif target.startswith("datetime64"):
        out, blank, bad = _to_datetime(series, target)
    else:  # a canonical dtype this module does not know: leave it to pandas
        out, blank, bad = (
            series.astype(target),
            np.zeros(len(series), bool),
            np.zeros(len(series), bool),
        )
    rows = np.flatnonzero(bad)[:EXAMPLES_PER_COLUMN]
    examples = pd.DataFrame({"row": rows})
    if ids is not None:
        examples[s.CUSTOMER_ID] = ids.iloc[rows].astype("string").to_numpy()
    examples["value"] = series.iloc[rows].astype(str).to_numpy()
    report = ColumnConversion(
        column=str(series.name),
        source_dtype=source_dtype,
        target_dtype=target,
        missing=missing,
        blanks=int(blank.sum()),
        unparseable=int(bad.sum()),
        examples=examples,
    )
    return out, report


def _parse_text(
    series: pd.Series, parse: Callable[[pd.Series], pd.Series]
) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Parse text cells through their distinct values (columns repeat values a lot).

    ``parse`` gets the stripped distinct texts (null-like ones masked) and returns
    parsed values of the target dtype, null where a text could not be read.
    Returns the parsed column, the blank mask and the unparseable mask.
    """
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    text = pd.Series(np.asarray(uniques, dtype=object), dtype=object).astype("string").str.strip()
    blank_u = text.str.lower().isin(NULL_TOKENS).to_numpy(dtype=bool, na_value=False)
    parsed_u = parse(text.mask(blank_u))
    bad_u = parsed_u.isna().to_numpy(dtype=bool) & ~blank_u
    valid = codes >= 0
    safe = np.where(valid, codes, 0)
    blank = np.zeros(len(series), dtype=bool)
    bad = np.zeros(len(series), dtype=bool)
    if len(uniques):
        blank[valid] = blank_u[safe[valid]]
        bad[valid] = bad_u[safe[valid]]
    values = pd.api.extensions.take(parsed_u.array, codes, allow_fill=True)
    return pd.Series(values, index=series.index, name=series.name), blank, bad


def _to_string(series: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    values = series
    if pd.api.types.is_float_dtype(series.dtype):
        # ids read as floats (because of a null) must not become "123.0"
        whole = series.dropna()
        if (whole == np.round(whole)).all():
            values = series.astype("Int64")
    out = values.astype("string")
    blank = _blank_text(out)
    if blank.any():
        out = out.mask(blank)
    return out, blank, np.zeros(len(series), dtype=bool)


def _blank_text(text: pd.Series) -> np.ndarray:
    """Mask of cells that are empty or only whitespace (``str.strip() == ""``).

    Only a cell whose first character is whitespace (or that is empty) can be blank, and
    a column has few distinct first characters: Arrow finds them without a Python call per
    cell, and only the few candidate cells are stripped in Python.
    """
    try:
        arrow = pa.array(text.to_numpy(dtype=object), type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # not all text: the plain way
        return (text.str.strip() == "").to_numpy(dtype=bool, na_value=False)
    first = pc.utf8_slice_codeunits(arrow, 0, 1)
    starts = [c for c in pc.unique(first).to_pylist() if c is not None and (c == "" or c.isspace())]
    if not starts:
        return np.zeros(len(text), dtype=bool)
    candidates = np.flatnonzero(
        pc.is_in(first, value_set=pa.array(starts, type=pa.large_string()))
        .to_numpy(zero_copy_only=False)
        .astype(bool, copy=False)
    )
    blank = np.zeros(len(text), dtype=bool)
    values = text.to_numpy(dtype=object)
    blank[candidates] = [values[i].strip() == "" for i in candidates]
    return blank


def _to_number(series: pd.Series, target: str) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    n = len(series)
    blank = bad = np.zeros(n, dtype=bool)
    if pd.api.types.is_bool_dtype(series.dtype):
        numbers = series.astype("Int64").astype("Float64")
    elif pd.api.types.is_numeric_dtype(series.dtype):
        numbers = series.astype("Float64")
    else:
        numbers, blank, bad = _parse_text(
            series, lambda t: pd.to_numeric(t, errors="coerce").astype("Float64")
        )
    if target == "Int64":
        # 2.5 in an integer column is a wrong value, not a rounding job
        frac = (numbers != numbers.round()).to_numpy(dtype=bool, na_value=False)
        if frac.any():
            bad = bad | frac
            numbers = numbers.mask(frac)
        return numbers.astype("Int64"), blank, bad
    return numbers.astype("float64"), blank, bad


def _parse_booleans(text: pd.Series) -> pd.Series:
    lower = text.str.lower()
    out = pd.Series(pd.NA, index=text.index, dtype="boolean")
    out[lower.isin(TRUE_TOKENS).to_numpy(dtype=bool, na_value=False)] = True
    out[lower.isin(FALSE_TOKENS).to_numpy(dtype=bool, na_value=False)] = False
    return out


def _to_boolean(series: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype("boolean"), *_none(len(series))
    return _parse_text(series, _parse_booleans)


def _to_datetime(series: pd.Series, target: str) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    n = len(series)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").dt.tz_localize(None).astype(target), *_none(n)
    if pd.api.types.is_datetime64_dtype(series.dtype):
        return series.astype(target), *_none(n)

    def parse(text: pd.Series) -> pd.Series:
        parsed = pd.to_datetime(text, errors="coerce", utc=True)
        return parsed.dt.tz_localize(None).astype(target)

    return _parse_text(series, parse)


def _none(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
