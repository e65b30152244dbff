"""Where outcomes come from: the source a spec's ``outcomes:`` section declares.

``load_outcomes(spec, week_start, synthetic_knobs)`` reads the declared source (a file or
folder through ``FileSource``, a table or query through ``SqlSource``, or the synthetic
world: ``core.synthetic.outcomes`` for the customers the synthetic source drew that week)
and maps it onto ``entity_id`` / ``outcome`` / ``known_ts`` (``core.outcomes``). Every
failure the user can fix raises ``DataSourceError`` naming the source and the key.

``OutcomeSourceResource`` is the Dagster resource: it holds no location of its own (the
spec says where), only ``concept_drift``, which overrides the spec's synthetic knob for a
scenario or a demo without editing the spec. Unset, the synthetic world's mechanism is
the synthetic data source's ``concept_drift`` (``CHURN_SYNTHETIC_CONCEPT_DRIFT``) when that is
set, else the spec's: snapshots and outcomes come from one world.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import dagster as dg
import pandas as pd

from churn_platform.core.mapping import DataSourceError
from churn_platform.core.outcomes import map_outcomes
from churn_platform.core.spec import Spec
from churn_platform.core.synthetic import SyntheticSpec, outcomes
from churn_platform.resources.data_source import FileSource, SqlSource


def _synthetic(
    spec: Spec, week_start: str, knobs: Mapping[str, Any], concept_drift: float | None
) -> pd.DataFrame:
    assert spec.outcomes is not None
    known = {f.name for f in fields(SyntheticSpec)}
    wanted = {k: v for k, v in knobs.items() if k in known and k != "as_of"}
    if "contract_mix" in wanted:
        wanted["contract_mix"] = tuple(wanted["contract_mix"])
    # the resource's override, else the synthetic data source's world, else the spec's
    drift = concept_drift
    if drift is None:
        drift = wanted.pop("concept_drift", 0.0) or spec.outcomes.source.concept_drift
    try:
        world = SyntheticSpec(**{**wanted, "as_of": week_start, "concept_drift": float(drift)})
    except ValueError as exc:
        raise DataSourceError(f"synthetic outcomes: {exc}") from exc
    return outcomes(world, spec.outcomes.label_delay_days)


def load_outcomes(
    spec: Spec,
    week_start: str,
    synthetic_knobs: Mapping[str, Any] | None = None,
    concept_drift: float | None = None,
) -> pd.DataFrame:
    """The outcomes ``spec`` declares, mapped for ``core.performance``.

    ``synthetic_knobs`` are the synthetic data source's (size, seed, ...): the synthetic
    world gives the outcomes of the customers it drew for the week starting
    ``week_start``. A file or SQL source holds every outcome; the join picks each
    prediction's own.
    """
    if spec.outcomes is None:
        raise DataSourceError(
            f"spec {spec.name!r} has no 'outcomes' section: declare where outcomes come from "
            "(source kind file, sql or synthetic) to measure realized performance"
        )
    src = spec.outcomes.source
    if src.kind == "synthetic":
        raw, where = (
            _synthetic(spec, week_start, synthetic_knobs or {}, concept_drift),
            ("the synthetic outcomes"),
        )
    elif src.kind == "file":
        loaded = FileSource(str(src.path)).load()
        raw, where = loaded.frame, f"outcomes file {loaded.description['location']}"
    else:
        sql = SqlSource(str(src.url), src.table or None, src.query or None, src.db_schema or None)
        loaded = sql.load()
        raw, where = loaded.frame, f"outcomes {loaded.description['location']}"
    try:
        return map_outcomes(raw, spec, where)
    except ValueError as exc:
        raise DataSourceError(str(exc)) from exc


class OutcomeSourceResource(dg.ConfigurableResource):
    """Reads the outcomes the model's spec declares (``load_outcomes``); ``concept_drift``
    (0..1, unset: the spec's) changes the synthetic world's mechanism, not its features."""

    concept_drift: float | None = None

    def load(
        self, spec: Spec, week_start: str, synthetic_knobs: Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """The week's outcomes for ``spec`` (see ``load_outcomes``)."""
        return load_outcomes(spec, week_start, synthetic_knobs, self.concept_drift)
