"""Out-of-range values are counted per field (issue #27, point 8)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from churn_platform.core import schema as s
from churn_platform.core.spec import default_spec
from churn_platform.serving.model_server.ranges import OutOfRangeCounter, out_of_range_counts


def test_values_outside_the_specs_ranges_are_counted_per_field() -> None:
    spec = default_spec()
    bounded = [n for n, f in spec.features.items() if f.range is not None]
    assert s.LAST_LOGIN_HOUR in bounded
    records = [
        {s.LAST_LOGIN_HOUR: 99},
        {s.LAST_LOGIN_HOUR: 3},
        {s.LAST_LOGIN_HOUR: None},  # a null is the null rules' business
        {s.LAST_LOGIN_HOUR: -1, s.MONTHLY_SPEND: True},
    ]
    counts = out_of_range_counts(records, spec)
    assert counts == {s.LAST_LOGIN_HOUR: 2}
    registry = CollectorRegistry()
    counter = OutOfRangeCounter(registry, "3")
    counter.count(counts)
    text = generate_latest(registry).decode()
    assert 'churn_out_of_range_values_total{field="last_login_hour",model_version="3"} 2.0' in text
