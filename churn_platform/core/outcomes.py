"""Outcomes as the spec declares them, mapped onto what the performance join reads.

A spec's ``outcomes:`` section names the source (file, SQL or the synthetic world), the
outcome table's id, outcome and known-at columns, and ``label_delay_days``. The outcome
column is mapped with the *target's* values (``target.positive`` -> 1, ``negative`` -> 0),
so an outcome table that says ``Yes``/``No`` needs no second mapping. ``map_outcomes``
returns the frame ``core.performance`` joins: ``entity_id``, ``outcome``, ``known_ts``.
"""

from __future__ import annotations

import pandas as pd

from churn_platform.core.performance import outcomes_frame
from churn_platform.core.spec import Spec


def map_outcomes(raw: pd.DataFrame, spec: Spec, where: str = "the outcomes") -> pd.DataFrame:
    """``raw`` (the source's rows) as ``entity_id`` / ``outcome`` (0/1) / ``known_ts``.

    A missing column, an outcome value that is neither a positive nor a negative target
    value, or an unreadable known-at date raise ``ValueError`` naming the column, ``where``
    and the spec key to change.
    """
    id_col, outcome_col, known_col = spec.outcome_columns()
    missing = [c for c in (id_col, outcome_col, known_col) if c not in raw.columns]
    if missing:
        raise ValueError(
            f"{where} lack column(s) {missing} (spec 'outcomes': id_column, outcome_column, "
            f"known_at_column); columns there: {[str(c) for c in raw.columns][:30]}"
        )
    values = spec.target.value_map()
    as_text = raw[outcome_col].map(_text)
    outcome = as_text.map(values)
    bad = outcome.isna()
    if bad.any():
        shown = raw.loc[bad, outcome_col].drop_duplicates().head(5).tolist()
        raise ValueError(
            f"{where}: column {outcome_col!r} holds {shown}, neither a positive "
            f"{list(spec.target.positive)} nor a negative {list(spec.target.negative)} value "
            "of the spec's target: map them there or fix the outcomes"
        )
    known = raw[known_col]
    if not pd.api.types.is_numeric_dtype(known):
        parsed = pd.to_datetime(known, errors="coerce", utc=True)
        if parsed.isna().any():
            shown = known[parsed.isna()].head(3).tolist()
            raise ValueError(
                f"{where}: column {known_col!r} (outcomes.known_at_column) must hold dates or "
                f"Unix seconds; unreadable: {shown}"
            )
        known = parsed
    return outcomes_frame(
        pd.DataFrame(
            {
                "entity_id": raw[id_col].map(_text).reset_index(drop=True),
                "outcome": outcome.astype(int).reset_index(drop=True),
                "known_ts": known.reset_index(drop=True),
            }
        )
    )


def _text(value: object) -> str:
    """A cell as the mapping compares it: integral floats lose their ``.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
