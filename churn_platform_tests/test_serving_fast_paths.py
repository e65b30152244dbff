"""The 1-row fast paths of the model server give what the general paths give.

``InputSchema.build`` makes each column with ``column_array`` (NumPy and pandas' masked
arrays built directly) instead of ``pd.array`` / ``pd.to_datetime``: the frames must be
equal value for value, with the same dtypes and masks, whatever the values (nulls, edge
dates, huge numbers). ``MicroBatcher`` scores a lone request on the event loop (no hop to
the worker thread) but still batches requests that arrive together, and a failure is raised
the same way on either path. ``parse_json`` skips the depth scan only when it cannot matter.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from churn_platform.core.spec import default_spec
from churn_platform.serving.http_limits import MAX_JSON_DEPTH, parse_json
from churn_platform.serving.model_server.batching import INLINE_MAX_ROWS, MicroBatcher
from churn_platform.serving.model_server.schema import InputSchema, column_array

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
SCHEMA = InputSchema.from_spec(default_spec())
RECORD = {
    "signup_date": "2025-09-22",
    "tenure_months": 13,
    "monthly_spend": 218.53,
    "contract_type": "multi-year",
    "is_enterprise": True,
    "region": "north",
    "support_tickets": 2,
    "last_login_hour": 4,
}


def _reference_build(schema: InputSchema, values: dict[str, list[Any]]) -> pd.DataFrame:
    """The frame as ``InputSchema.build`` made it before ``column_array``."""
    data = {}
    for column in schema.columns:
        col = values[column.name]
        if column.kind == "datetime":
            data[column.name] = pd.to_datetime(pd.Series(col, dtype="object")).astype(column.dtype)
        else:
            data[column.name] = pd.array(col, dtype=column.dtype)
    return pd.DataFrame(data)


def _or_none(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), values)


_DATES = st.datetimes(min_value=dt.datetime(1677, 9, 22), max_value=dt.datetime(2262, 4, 10))
_KINDS: dict[str, st.SearchStrategy[Any]] = {
    "int": st.integers(min_value=-(10**12), max_value=10**12),
    "float": st.one_of(
        st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
        st.integers(min_value=-(10**12), max_value=10**12),
    ),
    "str": st.text(max_size=12),
    "bool": st.booleans(),
    "datetime": _DATES,
}


@st.composite
def _checked_values(draw: st.DrawFn) -> dict[str, list[Any]]:
    """Column values as the checks hand them to ``build``: 1 to 30 rows, nulls anywhere."""
    n = draw(st.integers(min_value=1, max_value=30))
    return {
        c.name: draw(st.lists(_or_none(_KINDS[c.kind]), min_size=n, max_size=n))
        for c in SCHEMA.columns
    }


@SETTINGS
@given(_checked_values())
def test_build_makes_the_frame_the_general_path_makes(values: dict[str, list[Any]]) -> None:
    built, reference = SCHEMA.build(values), _reference_build(SCHEMA, values)
    assert list(built.dtypes) == list(reference.dtypes)
    pd.testing.assert_frame_equal(built, reference, check_exact=True)
    for name in built.columns:  # the masks too, and what lies under them
        got, want = built[name].array, reference[name].array
        if hasattr(want, "_mask"):
            assert np.array_equal(got._mask, want._mask)
            assert np.array_equal(got._data, want._data)


def test_column_array_of_the_request_path_dtypes() -> None:
    dates = [dt.datetime(1677, 9, 22, 0, 0, 0, 1), None, dt.datetime(2262, 4, 10, 23, 59, 59)]
    got = column_array("datetime64[ns]", dates)
    want = pd.to_datetime(pd.Series(dates, dtype="object")).astype("datetime64[ns]")
    assert got.dtype == want.dtype and np.array_equal(got.view("i8"), want.to_numpy().view("i8"))
    assert str(column_array("Int64", [None, 3]).dtype) == "Int64"
    assert str(column_array("boolean", [None, True]).dtype) == "boolean"
    assert str(column_array("string", ["a", None]).dtype) == "string"


def _values(n_rows: int) -> dict[str, list[Any]]:
    return SCHEMA.admit([RECORD] * n_rows).values


class _Model:
    """A predict that notes the thread it ran on (and can fail)."""

    def __init__(self, fail: bool = False) -> None:
        self.threads: list[str] = []
        self.fail = fail

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        if self.fail:
            raise RuntimeError("the model failed")
        p = np.linspace(0.1, 0.9, len(frame))
        return np.column_stack([1 - p, p])


def _run(model: _Model, *sizes: int) -> tuple[MicroBatcher, list[Any]]:
    """``sizes`` requests started in the same turn of the event loop."""

    async def main() -> tuple[MicroBatcher, list[Any]]:
        batcher = MicroBatcher(model, SCHEMA)
        batcher.start()
        try:
            calls = (batcher.score(_values(n), n) for n in sizes)
            return batcher, await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_a_lone_request_is_scored_on_the_event_loop() -> None:
    model = _Model()
    batcher, (scores,) = _run(model, 1)
    assert (batcher.batches, batcher.inline) == (1, 1)
    assert model.threads == [threading.current_thread().name]  # asyncio.run's thread
    assert np.array_equal(scores, [0.1])


def test_requests_that_arrive_together_are_still_scored_in_one_batch() -> None:
    model = _Model()
    batcher, outcomes = _run(model, 1, 1, 2)
    assert (batcher.batches, batcher.inline) == (1, 0)
    assert len(model.threads) == 1 and model.threads[0].startswith("predict")
    expected = np.linspace(0.1, 0.9, 4)  # each request gets its own rows of the batch
    assert [o.tolist() for o in outcomes] == [[expected[0]], [expected[1]], list(expected[2:])]


def test_a_big_lone_request_goes_to_the_worker_thread() -> None:
    model = _Model()
    batcher, (scores,) = _run(model, INLINE_MAX_ROWS + 1)
    assert (batcher.batches, batcher.inline) == (1, 0)
    assert model.threads[0].startswith("predict") and len(scores) == INLINE_MAX_ROWS + 1


def test_a_failure_is_raised_the_same_on_either_path() -> None:
    for sizes in ((1,), (INLINE_MAX_ROWS + 1,)):
        _, (outcome,) = _run(_Model(fail=True), *sizes)
        assert isinstance(outcome, RuntimeError) and str(outcome) == "the model failed"


def test_the_depth_bound_holds_with_and_without_the_scan() -> None:
    assert parse_json(b'{"records": [{"a": 1}]}') == {"records": [{"a": 1}]}
    deep = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(deep) is not None  # at the bound: parsed
    with pytest.raises(ValueError, match=f"nested {MAX_JSON_DEPTH + 1} levels deep"):
        parse_json("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    # many brackets, none deep: scanned, and parsed
    wide = "[" + ",".join(["[1]"] * (2 * MAX_JSON_DEPTH)) + "]"
    assert len(parse_json(wide)) == 2 * MAX_JSON_DEPTH
    # brackets inside strings do not count
    assert parse_json('["' + "[" * (2 * MAX_JSON_DEPTH) + '"]') is not None
