"""Infer a commented starter spec from a table: what ``spec infer`` writes for a person to edit.

``infer_spec(frame, target=..., id_column=...)`` reads the rows as a source hands them over
(a CSV read as text, a Parquet file, a SQL table) and decides, per column:

* its kind: integer or numeric (also numbers stored as text, blanks counted as nulls),
  boolean (yes/no, true/false, 0/1), date (parseable dates), cyclical (a column named like
  an hour with values in 0..23, a weekday in 0..6), categorical (low-cardinality text, with
  its allowed set), or left out (high-cardinality text other than the id, an empty column, a
  row index or numeric identifier: distinct whole numbers 1..n, increasing down the table, or
  named like an id);
* its range (observed, widened by a margin and rounded outward) and its null rate (with
  headroom) as ``max_null_rate``;
* for the target, which of its values mean churned (yes/no, 1/0, true/false, churned/active...).

Kinds are decided on a sample of each column's distinct values; ranges, null rates and
allowed sets come from a full pass. Every column is factorised once and the work is done on
its distinct values weighted by their counts, so 1M rows cost one ``pd.factorize`` per
column. ``core.spec_starter`` writes the result as commented YAML.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from churn_platform.core.mapping import FALSE_TOKENS, NULL_TOKENS, TRUE_TOKENS
from churn_platform.core.serving_rules import RESERVED_NAMES

# target values that mean churned / stayed (compared lower-case, stripped)
POSITIVE_TOKENS: frozenset[str] = frozenset(
    {"yes", "y", "true", "t", "1", "1.0", "churned", "churn", "churner", "cancelled",
     "canceled", "left", "lost", "exited", "inactive", "gone", "lapsed", "terminated"}
)  # fmt: skip
NEGATIVE_TOKENS: frozenset[str] = frozenset(
    {"no", "n", "false", "f", "0", "0.0", "active", "stayed", "retained", "renewed",
     "current", "kept", "existing", "loyal", "not churned", "not_churned"}
)  # fmt: skip

# cyclical columns recognised by name and value range: (name pattern, low, high, period)
CYCLES: tuple[tuple[str, int, int, int], ...] = (
    (r"hour", 0, 23, 24),
    (r"weekday|day_?of_?week|(^|_)dow($|_)", 0, 6, 7),
)


class SpecInferError(ValueError):
    """The table cannot give a starter spec (e.g. the target column is missing); says why."""


@dataclass(frozen=True)
class InferOptions:
    """Knobs of the inference (the command line sets them)."""

    margin: float = 0.10  # ranges widen by this share of the observed span on each side
    null_headroom: float = 1.5  # max_null_rate = observed rate x this, at least +1 point
    max_levels: int = 50  # text with more distinct values is not a categorical
    max_level_share: float = 0.2  # ...nor text whose distinct values exceed this share of rows
    onehot_levels: int = 15  # categoricals up to this many levels are one-hot encoded
    sample_values: int = 20_000  # distinct values looked at to decide a column's kind
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.margin <= 10:
            raise SpecInferError(
                f"margin must be in [0, 10] (a share of the span), got {self.margin}"
            )
        if self.null_headroom < 1:
            raise SpecInferError(f"null_headroom must be >= 1, got {self.null_headroom}")
        if self.max_levels < 2:
            raise SpecInferError(f"max_levels must be >= 2, got {self.max_levels}")


@dataclass
class ColumnProfile:
    """What the full pass saw in one column.

    Text columns keep their distinct non-blank values (stripped, as an Arrow array) and the
    rows per value; numeric columns keep their non-null values; dates their first and last.
    """

    name: str
    rows: int
    missing: int  # null in the source, or blank / null-like text
    dtype: str
    distinct: int
    text: pa.Array | None = None
    counts: np.ndarray | None = None
    numbers: np.ndarray | None = None
    span: tuple[str, str] | None = None

    @property
    def present(self) -> int:
        """Rows with a value."""
        return self.rows - self.missing

    @property
    def null_rate(self) -> float:
        """Share of rows without a value."""
        return self.missing / self.rows if self.rows else 0.0

    def most_common(self) -> tuple[str, int]:
        """The most common text value and its row count."""
        assert self.text is not None and self.counts is not None and len(self.counts)
        i = int(np.argmax(self.counts))
        return str(self.text[i].as_py()), int(self.counts[i])


@dataclass
class Inferred:
    """One column's decision: a spec entry (``entry``) and the comments explaining it."""

    name: str  # the spec's (snake_case) name
    source: str  # the table's column name
    entry: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # key -> comment on that key's line
    headline: str = ""  # comment above the entry
    left_out: str = ""  # non-empty: the column is not a feature, and why


@dataclass
class InferredSpec:
    """The whole inference: id, target, features, left-out columns and the table's size."""

    name: str
    rows: int
    origin: str
    id_column: Inferred
    target: Inferred
    features: list[Inferred]
    left_out: list[Inferred]
    options: InferOptions


# -- profiling -----------------------------------------------------------------------------


def profile_column(series: pd.Series) -> ColumnProfile:
    """One full pass over ``series``: blanks, distinct values and their counts (see class)."""
    rows = len(series)
    dtype = str(series.dtype)
    if pd.api.types.is_bool_dtype(series.dtype):
        missing = int(series.isna().sum())
        return ColumnProfile(str(series.name), rows, missing, dtype, 2)
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        dates = series.dropna()
        span = (str(dates.min().date()), str(dates.max().date())) if len(dates) else None
        return ColumnProfile(str(series.name), rows, rows - len(dates), dtype, 0, span=span)
    if pd.api.types.is_numeric_dtype(series.dtype):
        values = series.to_numpy(dtype=float, na_value=np.nan)
        numbers = values[~np.isnan(values)]
        distinct = len(pd.unique(numbers))
        return ColumnProfile(
            str(series.name), rows, rows - len(numbers), dtype, distinct, numbers=numbers
        )
    text, counts, missing = _text_counts(series)
    return ColumnProfile(
        str(series.name), rows, missing, dtype, len(text), text=text, counts=counts
    )


def _text_counts(series: pd.Series) -> tuple[pa.Array, np.ndarray, int]:
    """Distinct stripped non-blank texts, rows per text, and rows blank or null (Arrow
    kernels: hashing and string work happen once per distinct value, in C++)."""
    try:
        array = pa.array(series.to_numpy(dtype=object), type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed objects (e.g. ints from SQL)
        array = pa.array(
            series.astype(str).where(series.notna()).to_numpy(dtype=object),
            type=pa.string(),
            from_pandas=True,
        )
    table = pc.value_counts(array)
    values = table.field("values")
    counts = table.field("counts").to_numpy(zero_copy_only=False).astype(np.int64)
    stripped = pc.utf8_trim_whitespace(values)
    blank = pc.or_kleene(pc.is_null(values), pc.is_in(pc.utf8_lower(stripped), value_set=_NULL_SET))
    blank_np = blank.to_numpy(zero_copy_only=False).astype(bool)
    missing = int(counts[blank_np].sum())
    keep = pa.array(~blank_np)
    changed = pc.any(pc.not_equal(pc.filter(values, keep), pc.filter(stripped, keep))).as_py()
    values, counts = pc.filter(stripped, keep), counts[~blank_np]
    if changed:  # " a" and "a" are one value once stripped
        grouped = pa.table({"v": values, "n": counts}).group_by("v").aggregate([("n", "sum")])
        values, counts = grouped["v"].combine_chunks(), grouped["n_sum"].to_numpy()
    return values, counts, missing


_NULL_SET = pa.array(sorted(NULL_TOKENS), type=pa.string())
_NUMBER = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"
_DATE_SHAPE = r"^\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}"


def _sample(prof: ColumnProfile, options: InferOptions) -> pa.Array:
    """Up to ``options.sample_values`` of a text column's distinct values, at random."""
    assert prof.text is not None
    if len(prof.text) <= options.sample_values:
        return prof.text
    rng = np.random.default_rng(options.seed)
    pick = np.sort(rng.choice(len(prof.text), options.sample_values, replace=False))
    return prof.text.take(pa.array(pick))


def _share(mask: pa.Array) -> float:
    return float(pc.mean(pc.cast(mask, pa.float64())).as_py() or 0.0) if len(mask) else 0.0


# -- per-column decisions --------------------------------------------------------------------


def _snake(name: str) -> str:
    out = re.sub(r"[^0-9a-zA-Z]+", "_", name.strip()).strip("_").lower()
    out = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", out)
    if not out or out[0].isdigit():
        out = f"col_{out}"
    return out


def _pct(rate: float) -> str:
    if rate == 0:
        return "0%"
    if rate < 0.001:
        return "<0.1%"
    return f"{rate * 100:.1f}%"


def _number(value: float) -> int | float:
    """A float as the int it is when whole (YAML then shows 118, not 118.0)."""
    if math.isfinite(value) and float(value).is_integer():
        return int(value)
    return float(value)


def _step(span: float) -> float:
    """A round step a tenth of ``span``'s order of magnitude (10 for a span of 118)."""
    if span <= 0:
        return 1.0
    return float(10 ** math.floor(math.log10(span))) / 10


def widen(low: float, high: float, margin: float, integer: bool) -> tuple[float, float]:
    """``[low, high]`` widened by ``margin`` of the span on each side, rounded outward to a
    round step; a side that was non-negative stays non-negative."""
    span = high - low
    pad = margin * span if span > 0 else max(abs(high) * margin, 1.0)
    step = _step(span if span > 0 else pad * 10)
    if integer:
        step = max(1.0, step)
    new_low = math.floor((low - pad) / step) * step
    new_high = math.ceil((high + pad) / step) * step
    if low >= 0:
        new_low = max(0.0, new_low)
    return float(new_low), float(new_high)


def null_limit(rate: float, headroom: float) -> tuple[float, str]:
    """A ``max_null_rate`` above the observed ``rate`` and the rule that set it, said truly:
    ``rate x headroom``, or one point above the rate when that is larger (a rare blank must
    not fail the next snapshot); capped at 1, rounded up to 0.1 point."""
    scaled, floor = rate * headroom, rate + 0.01
    # rounded first: 0.2 x 1.5 is 0.30000000000000004 in floats, and must give 0.3
    limit = math.ceil(round(min(1.0, max(scaled, floor)) * 1000, 6)) / 1000
    if limit >= 1.0:
        return limit, "capped at 100%"
    if scaled >= floor:
        return limit, f"headroom x{headroom:g}"
    return limit, f"headroom +1 point ({limit / rate:.1f}x the observed rate)"


def _nulls(col: Inferred, prof: ColumnProfile, options: InferOptions) -> None:
    """``max_null_rate`` with headroom when the column has blanks; a comment either way."""
    rate = prof.null_rate
    if rate == 0:
        col.notes["kind"] = (col.notes.get("kind", "") + "; no blanks").lstrip("; ")
        return
    limit, rule = null_limit(rate, options.null_headroom)
    col.entry["max_null_rate"] = limit
    col.notes["max_null_rate"] = (
        f"{_pct(rate)} blank ({prof.missing:,} of {prof.rows:,} rows), {rule}"
    )


def _as_numbers(prof: ColumnProfile) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Values as floats, their row counts (None: one row each), and rows that did not parse."""
    if prof.numbers is not None:
        return prof.numbers, None, 0
    assert prof.text is not None and prof.counts is not None
    ok = pc.match_substring_regex(prof.text, _NUMBER).to_numpy(zero_copy_only=False).astype(bool)
    numbers = pc.cast(prof.text.filter(pa.array(ok)), pa.float64()).to_numpy(zero_copy_only=False)
    return numbers, prof.counts[ok], int(prof.counts[~ok].sum())


# a name that says "row index" or "identifier": a last word (snake_case, spaced or CamelCase)
_INDEX_WORDS = r"(^|[_\s])(id|idx|index|row|rownum|rownumber|row_number|no|num|number|key|seq)$"
_INDEX_CAMEL = r"[a-z](Id|ID|Idx|Index|Number|No|Num|Key)$"


def index_reason(prof: ColumnProfile, numbers: np.ndarray, counts: np.ndarray | None) -> str:
    """Why whole ``numbers`` (one per row, every one distinct) are a row index or an
    identifier rather than a feature, or "" when they may be a feature: consecutive
    (1..n in any order), increasing down the table, or unique and named like an id. A model
    that learns from a row number learns the order the file was written in."""
    # a few rows of distinct small numbers say nothing (24 rows of hours 0..23 are hours)
    if prof.missing or prof.rows < 100 or prof.distinct != prof.rows:
        return ""
    if counts is not None and np.any(counts != 1):
        return ""
    low, high = float(numbers.min()), float(numbers.max())
    if high - low == prof.rows - 1:
        how = f"the consecutive whole numbers {_number(low)}..{_number(high)}, one per row"
    elif counts is None and bool(np.all(np.diff(numbers) > 0)):
        how = f"{prof.rows:,} whole numbers increasing down the table"
    elif re.search(_INDEX_WORDS, prof.name.strip().lower()) or re.search(
        _INDEX_CAMEL, prof.name.strip()
    ):
        how = f"{prof.rows:,} distinct whole numbers named like an identifier"
    else:
        return ""
    return (
        f"{how}: a row index or identifier, not a feature (a model would learn the order the "
        "rows were written in; add it yourself if it really carries meaning)"
    )


def _numeric(col: Inferred, prof: ColumnProfile, options: InferOptions, stored: str) -> None:
    numbers, counts, unparseable = _as_numbers(prof)
    low, high = float(numbers.min()), float(numbers.max())
    whole = bool(np.all(numbers == np.round(numbers)))
    distinct = len(numbers) if counts is not None else prof.distinct
    if whole and not unparseable:
        col.left_out = index_reason(prof, numbers, counts)
        if col.left_out:
            return
    if whole and low in (0.0, 1.0) and high in (0.0, 1.0) and low != high:
        col.entry["kind"] = "boolean"
        col.notes["kind"] = f"only 0 and 1 observed{stored}"
        return
    for pattern, lo, hi, period in CYCLES:
        if whole and re.search(pattern, col.source.lower()) and lo <= low and high <= hi:
            col.entry.update(kind="cyclical", period=period, range=[lo, hi])
            col.notes["kind"] = (
                f"named like a cycle, values {_number(low)}..{_number(high)}{stored}"
            )
            col.notes["range"] = f"the whole cycle {lo}..{hi}"
            return
    col.entry["kind"] = "integer" if whole else "numeric"
    col.notes["kind"] = f"{distinct:,} distinct {'whole numbers' if whole else 'numbers'}{stored}"
    new_low, new_high = widen(low, high, options.margin, whole)
    col.entry["range"] = [_number(new_low), _number(new_high)]
    col.notes["range"] = (
        f"observed {_number(low):g}..{_number(high):g}, margin {options.margin:.0%}"
        + ("" if low < 0 else ", kept >= 0" if new_low == 0 and low > 0 else "")
    )
    mean = float(np.average(numbers, weights=counts))
    col.notes["mean"] = f"mean {mean:.4g}; add mean_range: [low, high] to guard it"
    if unparseable:
        col.notes["kind"] += (
            f"; {unparseable:,} value(s) are not numbers (e.g. "
            f"{_not_numbers(prof)[:3]}): the contract counts them unparseable, map them in "
            "'values' (e.g. '?': null) or clean them"
        )


def _not_numbers(prof: ColumnProfile) -> list[str]:
    assert prof.text is not None
    bad = pc.invert(pc.match_substring_regex(prof.text, _NUMBER))
    return [str(v) for v in prof.text.filter(bad).slice(0, 10).to_pylist()]


def _parse_dates(values: pa.Array) -> pd.Series:
    """Texts as dates: ISO 8601 first (fast), else pandas' per-value format guessing."""
    text = pd.Series(values.to_numpy(zero_copy_only=False), dtype=object)
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601")
    if parsed.notna().mean() < 0.99:
        parsed = pd.to_datetime(text, errors="coerce", format="mixed")
    return parsed


def _looks_like_dates(sample: pa.Array) -> bool:
    if _share(pc.match_substring_regex(sample, _DATE_SHAPE)) < 0.99:
        return False
    return bool(_parse_dates(sample.slice(0, 2_000)).notna().mean() >= 0.99)


def infer_column(prof: ColumnProfile, options: InferOptions, name: str) -> Inferred:
    """The spec entry for one feature column (or why it is left out)."""
    col = Inferred(name=name, source=prof.name)
    if name != prof.name:
        col.entry["source"] = prof.name
    if prof.present == 0:
        col.left_out = f"no values at all ({prof.rows:,} rows blank)"
        return col
    if pd.api.types.is_bool_dtype(prof.dtype):
        col.entry["kind"] = "boolean"
        col.notes["kind"] = "stored as booleans"
    elif prof.span is not None:
        col.entry.update(kind="date", drift=False)
        col.notes["kind"] = f"stored as dates, observed {prof.span[0]}..{prof.span[1]}"
        col.notes["drift"] = "a date drifts by construction; watch a duration derived from it"
    elif prof.numbers is not None:
        _numeric(col, prof, options, "")
    else:
        assert prof.text is not None
        sample = _sample(prof, options)
        lowered = pc.unique(pc.utf8_lower(sample))
        words = set(lowered.to_pylist()) if len(lowered) <= 12 else set()
        if (
            words
            and words <= (TRUE_TOKENS | FALSE_TOKENS)
            and words & TRUE_TOKENS
            and words & FALSE_TOKENS
        ):
            if words <= {"0", "1", "0.0", "1.0"}:
                _numeric(col, prof, options, ", stored as text")
            else:
                col.entry["kind"] = "boolean"
                col.notes["kind"] = f"values {sorted(str(v) for v in prof.text.to_pylist())}"
        elif _share(pc.match_substring_regex(sample, _NUMBER)) >= 0.99:
            _numeric(col, prof, options, ", stored as text")
        elif _looks_like_dates(sample):
            dates = _parse_dates(prof.text).dropna()
            col.entry.update(kind="date", drift=False)
            col.notes["kind"] = (
                f"parseable dates, observed {dates.min().date()}..{dates.max().date()}"
            )
            col.notes["drift"] = "a date drifts by construction; watch a duration derived from it"
        elif prof.distinct <= options.max_levels and prof.distinct <= max(
            2, options.max_level_share * prof.present
        ):
            allowed = sorted(str(v) for v in prof.text.to_pylist())
            top, top_rows = prof.most_common()
            onehot = prof.distinct <= options.onehot_levels
            col.entry.update(kind="categorical", allowed=allowed)
            col.entry["encoding"] = ["onehot"] if onehot else ["frequency"]
            col.notes["kind"] = (
                f"{prof.distinct} distinct value(s) in {prof.present:,} rows; most common "
                f"{top!r} ({top_rows / prof.present:.0%})"
            )
            col.notes["allowed"] = "every value observed; a new one fails the contract"
            col.notes["encoding"] = (
                f"one column per value (<= {options.onehot_levels} values)"
                if onehot
                else f"frequency encoding (> {options.onehot_levels} values)"
            )
        else:
            col.left_out = (
                f"{prof.distinct:,} distinct text values in {prof.present:,} rows: free text or "
                "an identifier, not a feature (map it to a categorical yourself if it is one)"
            )
            return col
    if col.left_out:  # a numeric row index or identifier
        return col
    _nulls(col, prof, options)
    return col


def infer_target(prof: ColumnProfile, name: str) -> Inferred:
    """Which target values mean churned: recognised words/numbers, else the rarer value."""
    col = Inferred(name=name, source=prof.name)
    if name != prof.name:
        col.entry["source"] = prof.name
    counts = _value_counts(prof)
    values = list(counts)
    if len(values) != 2:
        shown = [str(v) for v in values[:10]]
        raise SpecInferError(
            f"target column {prof.name!r} has {prof.distinct} distinct value(s) {shown}; a churn "
            "target needs exactly two (churned / stayed): pick the right column with --target "
            "or clean the column"
        )
    keys = [str(v).strip().lower() for v in values]
    positive = [v for v, k in zip(values, keys, strict=True) if k in POSITIVE_TOKENS]
    negative = [v for v, k in zip(values, keys, strict=True) if k in NEGATIVE_TOKENS]
    how = "recognised"
    if len(positive) != 1 or len(negative) != 1 or positive == negative:
        # churn is nearly always the minority class: guess the rarer value, say so
        rare, common = sorted(values, key=lambda v: counts[v])
        positive, negative = [rare], [common]
        how = "GUESSED as the rarer value, check it and swap positive/negative if wrong"
    pos, neg = positive[0], negative[0]
    col.entry["positive"] = [_plain(pos)]
    col.entry["negative"] = [_plain(neg)]
    rate = counts[pos] / prof.present
    col.notes["positive"] = f"means churned: {how}; {_pct(rate)} of rows"
    col.notes["negative"] = "means stayed"
    if prof.missing:
        limit, rule = null_limit(prof.null_rate, 1.5)
        col.entry["max_null_rate"] = limit
        col.notes["max_null_rate"] = f"{_pct(prof.null_rate)} blank ({prof.missing:,} rows), {rule}"
    return col


def _value_counts(prof: ColumnProfile, limit: int = 10) -> dict[Any, int]:
    """Up to ``limit`` distinct values with their row counts, most common first."""
    if prof.text is not None and prof.counts is not None:
        order = np.argsort(-prof.counts, kind="stable")[:limit]
        texts = prof.text.take(pa.array(order)).to_pylist()
        return {t: int(c) for t, c in zip(texts, prof.counts[order], strict=True)}
    if prof.numbers is not None:
        counts = pd.Series(prof.numbers).value_counts().head(limit)
        return {v: int(c) for v, c in counts.items()}
    return {}


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones and whole-number text as numbers (for YAML); 1.0 as 1."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.0*)?", value.strip()):
        return int(float(value))
    if isinstance(value, float):
        return _number(value)
    return value


def infer_id(prof: ColumnProfile, name: str) -> Inferred:
    """The entity id column, with what the data says about its uniqueness."""
    col = Inferred(name=name, source=prof.name)
    if name != prof.name:
        col.entry["source"] = prof.name
    duplicated = prof.present - prof.distinct
    note = f"{prof.distinct:,} distinct in {prof.rows:,} rows"
    if duplicated or prof.missing:
        note += (
            f"; {duplicated:,} duplicate(s) and {prof.missing:,} blank(s): the contract "
            "refuses both (fix the data or choose another --id)"
        )
    col.headline = note
    return col


def infer_spec(
    frame: pd.DataFrame,
    *,
    target: str,
    id_column: str,
    name: str = "churn",
    origin: str = "",
    options: InferOptions | None = None,
) -> InferredSpec:
    """Profile ``frame`` and decide every column (see the module docstring)."""
    options = options or InferOptions()
    columns = [str(c) for c in frame.columns]
    for flag, column in (("--target", target), ("--id", id_column)):
        if column not in columns:
            raise SpecInferError(
                f"{flag} {column!r} is not a column of the table; columns: {columns}"
            )
    if target == id_column:
        raise SpecInferError(f"--target and --id name the same column {target!r}")
    if len(frame) == 0:
        raise SpecInferError("the table has no rows: there is nothing to infer from")
    names = _unique_names(columns)
    features: list[Inferred] = []
    left_out: list[Inferred] = []
    for source in columns:
        if source in (target, id_column):
            continue
        col = infer_column(profile_column(frame[source]), options, names[source])
        (left_out if col.left_out else features).append(col)
    if not features:
        raise SpecInferError(
            f"no column of {columns} besides the id and target can be a feature "
            f"({'; '.join(f'{c.source}: {c.left_out}' for c in left_out)})"
        )
    return InferredSpec(
        name=_snake(name) or "churn",
        rows=len(frame),
        origin=origin,
        id_column=infer_id(profile_column(frame[id_column]), names[id_column]),
        target=infer_target(profile_column(_no_bools(frame[target])), names[target]),
        features=features,
        left_out=left_out,
        options=options,
    )


def _no_bools(series: pd.Series) -> pd.Series:
    """A boolean target as 1/0 (the spec's target values are what the mapping compares)."""
    return series.astype("Int64") if pd.api.types.is_bool_dtype(series.dtype) else series


def _unique_names(columns: Sequence[str]) -> dict[str, str]:
    """Source column -> spec name: snake_case unless that would clash; a name a served
    prediction carries (``RESERVED_NAMES``, e.g. ``probability``) gets a ``_value`` suffix."""
    snakes = [_snake(c) for c in columns]
    names = {
        c: (s if snakes.count(s) == 1 and (s == c or s not in columns) else c)
        for c, s in zip(columns, snakes, strict=True)
    }
    taken = set(names.values())
    for column, name in names.items():
        if name in RESERVED_NAMES:
            renamed = f"{name}_value"
            while renamed in taken:
                renamed += "_"
            names[column] = renamed
            taken.add(renamed)
    return names
