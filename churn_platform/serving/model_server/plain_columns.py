"""Column-wise checks of plain requests: the fast path of ``InputSchema.admit``.

Most requests are plain: every record an object with exactly the model's fields, every
value already of its column's JSON type, finite and within bounds. For those the checks of
``schema.check_value`` come down to a few set and ``map`` operations per column (about 25x
less Python than one call per cell on 100-row requests). ``plain_column`` answers a
column's checked values only when every value would pass ``check_value`` unchanged (dates
parsed as it parses them); anything else (a float in an integer column, a non-finite or huge
number, an unseen category the spec refuses, a date near the ends of pandas' range, a value
of another type) gives None, and the caller checks the request value by value, so a bad
request gets exactly the error the per-value path gives (the first record, the first field).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

_NONE = type(None)
_TYPES: dict[str, frozenset[type]] = {
    "int": frozenset({int, _NONE}),
    "float": frozenset({int, float, _NONE}),
    "str": frozenset({str, _NONE}),
    "bool": frozenset({bool, _NONE}),
    "datetime": frozenset({str, _NONE}),
}
# a date between these lies well inside pandas' Timestamp range (1677-09-21 to 2262-04-11);
# one outside them takes the per-value path, which checks the exact bounds
_SAFE_DATES = (dt.datetime(1678, 1, 1), dt.datetime(2262, 1, 1))


def plain_column(
    kind: str,
    categories: tuple[str, ...],
    col: list[Any],
    refuse_unseen: bool,
    max_abs: float,
    max_category_chars: int,
) -> list[Any] | None:
    """``col`` (one column of a request, record order) as ``check_value`` returns it, when
    every value passes it without a conversion; else None (check value by value)."""
    types = set(map(type, col))
    if not types <= _TYPES[kind]:
        return None
    if kind in ("int", "float"):
        numbers = [v for v in col if v is not None] if _NONE in types else col
        if not numbers:
            return col
        # NaN compares false both ways: the finiteness test below catches what max() missed
        if max(map(abs, numbers)) > max_abs or not all(map(math.isfinite, numbers)):
            return None
        return col
    if kind == "str" and categories:
        allowed = frozenset(categories)
        outside = [v for v in col if v is not None and v not in allowed]
        if outside and (refuse_unseen or max(map(len, outside)) > max_category_chars):
            return None
        return col
    if kind == "datetime":
        return _dates(col)
    return col  # bool


def _dates(col: list[Any]) -> list[Any] | None:
    """ISO date strings parsed as ``check_value`` parses them (UTC, naive), or None."""
    low, high = _SAFE_DATES
    out: list[Any] = []
    parse = dt.datetime.fromisoformat
    for value in col:
        if value is None:
            out.append(None)
            continue
        try:
            parsed = parse(value)
            if parsed.tzinfo is not None:
                parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
        except (ValueError, OverflowError):
            return None
        if not low <= parsed <= high:
            return None
        out.append(parsed)
    return out


def unseen_rows(col: Sequence[Any], categories: tuple[str, ...]) -> list[int]:
    """Where ``col`` holds a value outside ``categories`` (nulls are not unseen)."""
    allowed = frozenset(categories)
    return [i for i, v in enumerate(col) if v is not None and v not in allowed]
