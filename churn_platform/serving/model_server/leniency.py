"""What a lenient server let through, counted per field (issue 25).

A categorical value outside the spec's ``allowed`` list is scored (the spec's
``serving.unseen_categories: score``, the default) and counted in
``churn_model_unseen_values_total{model_version, field}``; a field the spec does not
declare is dropped (``serving.unknown_fields: ignore``) and counted in
``churn_model_ignored_fields_total{model_version, field}``. The request path
(``model_server.app``) adds each admitted request's counts (``schema.Checked``).

Labels stay bounded: ``field`` of the unseen counter is always a declared feature; the
ignored counter takes the first ``MAX_IGNORED_NAMES`` distinct names a server sees
(each cut to ``MAX_NAME_CHARS``) and counts any later name as ``OTHER_FIELD``.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter

UNSEEN_METRIC = "churn_model_unseen_values"
IGNORED_METRIC = "churn_model_ignored_fields"
MAX_IGNORED_NAMES = 50
MAX_NAME_CHARS = 64
OTHER_FIELD = "__other__"


def field_label(name: str) -> str:
    """An undeclared field's name as a label or log entry: cut to ``MAX_NAME_CHARS``."""
    return name if len(name) <= MAX_NAME_CHARS else name[:MAX_NAME_CHARS] + "..."


class LeniencyCounter:
    """The unseen-value and ignored-field counters of one server, in its registry."""

    def __init__(self, registry: CollectorRegistry, version: str) -> None:
        self.unseen = Counter(
            UNSEEN_METRIC,
            "Scored categorical values outside the allowed list of the model's spec, per field",
            ["model_version", "field"],
            registry=registry,
        )
        self.ignored = Counter(
            IGNORED_METRIC,
            "Records that carried a field the model's spec does not declare (ignored), per "
            f"field (the first {MAX_IGNORED_NAMES} names, then {OTHER_FIELD})",
            ["model_version", "field"],
            registry=registry,
        )
        self.version = version
        self._ignored_names: set[str] = set()

    def count(self, unseen: Mapping[str, int], ignored: Mapping[str, int]) -> None:
        """Add one request's counts: field -> values (unseen) or records (ignored)."""
        for name, n in unseen.items():
            self.unseen.labels(self.version, name).inc(n)
        for name, n in ignored.items():
            self.ignored.labels(self.version, self._ignored_label(name)).inc(n)

    def _ignored_label(self, name: str) -> str:
        label = field_label(name)
        if label in self._ignored_names:
            return label
        if len(self._ignored_names) < MAX_IGNORED_NAMES:
            self._ignored_names.add(label)
            return label
        return OTHER_FIELD
