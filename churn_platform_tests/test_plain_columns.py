"""The column-wise fast paths of the request path give what the per-value paths give.

``InputSchema.admit`` checks a plain request column by column (``plain_columns``),
``RecordMapper.canonical`` skips columns already in JSON form, and the server counts
out-of-range values from the checked columns (``out_of_range_in_columns``). Generated
records, plain and not (wrong types, NaN, huge numbers, unseen and over-long categories,
missing and extra fields, odd dates, raw labels and text numbers), go through both paths:
same checked values, counts, notes and records, or the same error message.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from churn_platform.core.spec import Spec, default_spec, parse_spec
from churn_platform.serving.model_server.ranges import (
    out_of_range_counts,
    out_of_range_in_columns,
)
from churn_platform.serving.model_server.raw_records import (
    RecordMapper,
    _in_json_form,
    _needs_mapping,
)
from churn_platform.serving.model_server.schema import Checked, InputError, InputSchema
from churn_platform.testing import TELCO_SPEC

STRICT = {"unseen_categories": "refuse", "unknown_fields": "refuse"}
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def _specs() -> dict[str, Spec]:
    shipped = default_spec()
    telco = yaml.safe_load(TELCO_SPEC)
    telco["features"]["tenure_months"]["values"] = {"-1": 0, "unknown": None}  # numbers mapped
    return {
        "shipped": shipped,
        "strict": parse_spec({**shipped.to_dict(), "serving": STRICT}),
        "telco": parse_spec(TELCO_SPEC, where="telco.yaml"),
        "telco_mapped_numbers": parse_spec(telco, where="telco.yaml"),
    }


SPECS = _specs()
EDGES: list[Any] = [
    None,
    math.nan,
    math.inf,
    -math.inf,
    1e13,
    -(10**13),
    10**400,
    2.0,
    2.5,
    -1,
    0,
    True,
    "",
    " ",
    "-1",
    "unknown",
    "Yes",
    "3",
    "4.5",
    "Month-to-month",
    "new_plan",
    "x" * 300,
    "2025-03-01",
    "2025-03-01T10:00:00+05:00",
    "1677-09-21",
    "2262-04-12",
    "0001-01-01T00:00:00+01:00",
    [1],
    {"a": 1},
]
ODD = st.one_of(st.sampled_from(EDGES), st.text(max_size=8), st.floats())


def _plain_value(kind: str, categories: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """A value of the column's JSON type (sometimes null, unseen or a raw label)."""
    if kind == "int":
        return st.none() | st.integers(-1000, 10_000)
    if kind == "float":
        return st.none() | st.integers(-100, 100) | st.floats(-1e4, 1e4, allow_nan=False)
    if kind == "bool":
        return st.none() | st.booleans()
    if kind == "datetime":
        return st.none() | st.dates(dt.date(1990, 1, 1), dt.date(2030, 1, 1)).map(str)
    if categories:
        return st.none() | st.sampled_from((*categories, "new_plan"))
    return st.none() | st.text(max_size=5)


@st.composite
def requests(draw: st.DrawFn, schema: InputSchema) -> list[Any]:
    """Records of ``schema``: plain ones, with at most one odd value, field or record."""
    n = draw(st.integers(1, 6))
    records: list[Any] = [
        {c.name: draw(_plain_value(c.kind, c.categories)) for c in schema.columns} for _ in range(n)
    ]
    i = draw(st.integers(0, n - 1))
    odd = draw(st.sampled_from(["none", "value", "value", "value", "missing", "extra", "list"]))
    if odd == "value":
        records[i][draw(st.sampled_from([c.name for c in schema.columns]))] = draw(ODD)
    elif odd == "missing":
        records[i].pop(draw(st.sampled_from(sorted(records[i]))))
    elif odd == "extra":
        records[i]["extra_field"] = 1
    elif odd == "list":
        records[i] = [records[i]]
    return records


def _outcome(admit: Any, records: list[Any]) -> Any:
    """What ``admit`` gives, or the ``InputError`` (a 4xx) it raises; anything else it
    raises (an ``OverflowError`` deeper down: a 500) fails the test."""
    try:
        return admit(records)
    except InputError as exc:
        return f"{exc.status} {exc}"


def _same(a: Checked | str, b: Checked | str) -> None:
    if isinstance(a, str) or isinstance(b, str):
        assert a == b
        return
    assert a.values == b.values
    assert a.unseen == b.unseen
    assert a.ignored == b.ignored
    assert a.notes == b.notes
    assert a.records == b.records


def _plain_record(schema: InputSchema) -> dict[str, Any]:
    values = {"int": 3, "float": 2.5, "bool": True, "datetime": "2025-03-01", "str": "z"}
    return {c.name: c.categories[0] if c.categories else values[c.kind] for c in schema.columns}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_plain_records_take_the_column_wise_path(name: str) -> None:
    schema = InputSchema.from_spec(SPECS[name])
    records = [_plain_record(schema), _plain_record(schema)]
    plain = schema._admit_plain(records)
    assert plain is not None
    _same(plain, schema._admit_each(records))
    mapper = RecordMapper.for_schema(schema)
    assert mapper is not None
    assert all(a is b for a, b in zip(mapper.canonical(records), records, strict=True))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_edge_value_in_every_column_is_admitted_as_value_by_value(name: str) -> None:
    schema = InputSchema.from_spec(SPECS[name])
    record = _plain_record(schema)
    for column in schema.columns:
        for edge in EDGES:
            records = [dict(record), {**record, column.name: edge}, dict(record)]
            expected = _outcome(schema._admit_each, records)
            _same(_outcome(schema.admit, records), expected)
            _same(_outcome(schema.admit, records[1:]), _outcome(schema._admit_each, records[1:]))


@pytest.mark.parametrize("name", sorted(SPECS))
@SETTINGS
@given(data=st.data())
def test_admit_answers_as_the_record_by_record_check(name: str, data: st.DataObject) -> None:
    schema = InputSchema.from_spec(SPECS[name])
    records = data.draw(requests(schema))
    _same(_outcome(schema.admit, records), _outcome(schema._admit_each, records))


def _canonical_cell_by_cell(mapper: RecordMapper, records: list[Any]) -> list[Any]:
    """``RecordMapper.canonical`` as it was: every cell of every record tested."""
    renamed = [mapper._renamed(r, i) if isinstance(r, dict) else r for i, r in enumerate(records)]
    cells: dict[str, dict[int, Any]] = {}
    for i, record in enumerate(renamed):
        for name, value in record.items() if isinstance(record, dict) else ():
            kind = mapper.kinds.get(name)
            if kind is not None and _needs_mapping(kind, value, mapper.map_keys[name]):
                cells.setdefault(name, {})[i] = value
    return mapper._converted(renamed, cells) if cells else renamed


@pytest.mark.parametrize("name", sorted(SPECS))
@SETTINGS
@given(data=st.data())
def test_mapped_records_are_those_of_the_cell_by_cell_test(name: str, data: st.DataObject) -> None:
    schema = InputSchema.from_spec(SPECS[name])
    mapper = RecordMapper.for_schema(schema)
    assert mapper is not None
    records = data.draw(requests(schema))
    for column, kind in mapper.kinds.items():
        keys = mapper.map_keys[column]
        col = [r.get(column) if isinstance(r, dict) else None for r in records]
        if _in_json_form(kind, col, keys):
            assert not any(_needs_mapping(kind, v, keys) for v in col), (column, col)
    _same_mapping(mapper, records)


def _same_mapping(mapper: RecordMapper, records: list[Any]) -> None:
    expected = _outcome(lambda r: _canonical_cell_by_cell(mapper, r), records)
    got = _outcome(mapper.canonical, records)
    assert repr(got) == repr(expected)  # repr: NaN equals NaN
    if isinstance(got, list):
        assert [a is b for a, b in zip(got, records, strict=True)] == [
            a is b for a, b in zip(expected, records, strict=True)
        ]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_edge_value_in_every_column_is_mapped_as_cell_by_cell(name: str) -> None:
    schema = InputSchema.from_spec(SPECS[name])
    mapper = RecordMapper.for_schema(schema)
    assert mapper is not None
    record = _plain_record(schema)
    for column in schema.columns:
        for edge in EDGES:
            _same_mapping(mapper, [dict(record), {**record, column.name: edge}])


@pytest.mark.parametrize("name", sorted(SPECS))
@SETTINGS
@given(data=st.data())
def test_out_of_range_counts_from_columns_match_the_records(name: str, data: st.DataObject) -> None:
    spec = SPECS[name]
    schema = InputSchema.from_spec(spec)
    records = data.draw(requests(schema))
    outcome = _outcome(schema.admit, records)
    if isinstance(outcome, str):
        return
    bounded = [n for n, f in spec.features.items() if f.range is not None]
    assert bounded
    assert out_of_range_in_columns(outcome.values, spec) == out_of_range_counts(
        outcome.records, spec
    )


def test_out_of_range_columns_count_past_a_leading_nan() -> None:
    spec = SPECS["shipped"]
    name, feature = next((n, f) for n, f in spec.features.items() if f.range is not None)
    low, high = feature.range  # type: ignore[misc]
    below = (low if low is not None else 0) - 5
    column = [math.nan, 1 if low is None else low, below]
    assert out_of_range_in_columns({name: column}, spec) == {name: 1}
