"""Values outside the spec's ranges, counted per field (issue #27, point 8).

A scored record may carry a value the model was never trained on (``last_login_hour: 99``):
the model still answers, so the server counts it rather than refusing it. The request path
(``model_server.app``) calls ``out_of_range_in_columns(values, spec)`` after the schema check
and adds them to ``OutOfRangeCounter`` (``churn_out_of_range_values_total{field}``). A null is not out of range
(the spec's null rules say what nulls may be); a value of the wrong type is the schema's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from churn_platform.core.spec import Spec

OUT_OF_RANGE_METRIC = "churn_out_of_range_values"
_PLAIN = frozenset({int, float, type(None)})


def out_of_range_counts(records: Sequence[Mapping[str, Any]], spec: Spec) -> dict[str, int]:
    """Field -> how many of ``records`` hold a number outside its ``range`` in ``spec``
    (fields without a range, nulls and non-numbers are not counted; zero counts left out)."""
    bounded = {
        name: feature.range for name, feature in spec.features.items() if feature.range is not None
    }
    counts: dict[str, int] = {}
    for record in records:
        for name, (low, high) in bounded.items():
            value = record.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if (low is not None and value < low) or (high is not None and value > high):
                counts[name] = counts.get(name, 0) + 1
    return counts


def out_of_range_in_columns(values: Mapping[str, Sequence[Any]], spec: Spec) -> dict[str, int]:
    """``out_of_range_counts`` of admitted records from their checked column values
    (``schema.Checked.values``): the same counts, a column at a time."""
    counts: dict[str, int] = {}
    for name, feature in spec.features.items():
        col = values.get(name)
        if feature.range is None or not col:
            continue
        low, high = feature.range
        if set(map(type, col)) <= _PLAIN:  # JSON numbers and nulls: no isinstance per value
            numbers = [v for v in col if v is not None]
        else:
            numbers = [v for v in col if isinstance(v, int | float) and not isinstance(v, bool)]
        if not numbers:
            continue
        # min/max skip a NaN that is not first; a NaN first makes the test fail: count then
        if (low is None or min(numbers) >= low) and (high is None or max(numbers) <= high):
            continue
        n = sum((low is not None and v < low) or (high is not None and v > high) for v in numbers)
        if n:
            counts[name] = n
    return counts


class OutOfRangeCounter:
    """The Prometheus counter of out-of-range values per field, in a server's registry."""

    def __init__(self, registry: CollectorRegistry, version: str) -> None:
        self.counter = Counter(
            OUT_OF_RANGE_METRIC,
            "Scored values outside the range of the model's spec, per field",
            ["model_version", "field"],
            registry=registry,
        )
        self.version = version

    def count(self, counts: Mapping[str, int]) -> None:
        """Add one request's ``out_of_range_counts``."""
        for field, n in counts.items():
            self.counter.labels(self.version, field).inc(n)
