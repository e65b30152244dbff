"""The weekly scores: every validated customer of a week scored by the champion, ranked.

``score_table`` turns entity ids and probabilities into the table the retention team reads
(one row per customer: probability, rank 1 = most likely to churn, decile 1 = the top 10%,
and the identity of the scoring: week, model version, data version, spec hash, run).
The check functions judge a table: one row per validated customer, unique ids,
probabilities in [0, 1], the batch numbers equal to the serving path's on a sample, and the
score distribution's PSI against the previous week. Each returns a ``CheckOutcome`` with
its evidence; planted defects make them fail (tests hold that). Nothing here imports Dagster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from churn_platform.core.drift import psi_from_shares
from churn_platform.core.model_checks import CheckOutcome

ENTITY = "entity_id"
PROBABILITY = "probability"
SCORE_COLUMNS = (
    "week",
    ENTITY,
    PROBABILITY,
    "rank",
    "decile",
    "model_version",
    "data_version",
    "spec_hash",
    "run_id",
    "scored_at",
)
ROWS, UNIQUE, RANGE, PARITY, PSI = (
    "one_row_per_customer",
    "entity_ids_unique",
    "probabilities_in_range",
    "serving_parity",
    "score_psi_vs_previous_week",
)
CHECK_DESCRIPTIONS = {
    ROWS: "One score per validated customer of the week: none missing, none extra.",
    UNIQUE: "Every entity id appears once.",
    RANGE: "Every probability is a number in [0, 1].",
    PARITY: "A sample scored through the model server's code (JSON records, the server's "
    "schema and verified model load) gives the batch numbers.",
    PSI: "The score distribution's PSI against the previous week's scores (WARN).",
}
BLOCKING = (ROWS, UNIQUE, RANGE, PARITY)  # a failure here keeps the week unpublished
SAMPLE_SHOWN = 10


@dataclass(frozen=True)
class ScoresSettings:
    """How the weekly scores are made (README settings table).

    start_date: the first week (YYYY-MM-DD, a Sunday; weeks run Sunday to Saturday, UTC),
        the partitions' start (``CHURN_SCORES_START``).
    database_set: whether ``CHURN_SCORES_URL`` names a database to upsert into.
    serving_sample: rows scored again through the serving path for the parity check.
    parity_tolerance: the largest difference allowed between batch and served numbers (JSON
        carries numbers to 10 significant digits, as a client sends them).
    psi_threshold: the PSI against the previous week above which the check warns.
    """

    start_date: str = "2026-11-01"
    database_set: bool = False
    serving_sample: int = 200
    parity_tolerance: float = 1e-6
    psi_threshold: float = 0.2

    def __post_init__(self) -> None:
        try:
            pd.Timestamp(self.start_date)
        except ValueError as exc:
            raise ValueError(
                f"CHURN_SCORES_START must be a date YYYY-MM-DD, got {self.start_date!r}"
            ) from exc


@dataclass(frozen=True)
class ScoreIdentity:
    """What every row of a week's table carries: which week, model, data, spec and run."""

    week: str
    model_version: str
    data_version: str
    spec_hash: str
    run_id: str
    scored_at: str


def week_start_of(day: str) -> str:
    """The Sunday (YYYY-MM-DD) starting the week that holds ``day`` (weeks run Sunday to
    Saturday, as Dagster's weekly partitions do); ``ValueError`` names a bad date."""
    try:
        stamp = pd.Timestamp(str(day)).normalize()
    except ValueError as exc:
        raise ValueError(f"{day!r} is not a date YYYY-MM-DD") from exc
    return (stamp - pd.Timedelta(days=(stamp.dayofweek + 1) % 7)).date().isoformat()


def previous_week(week: str) -> str:
    """The week before ``week`` (its Sunday, YYYY-MM-DD)."""
    return (pd.Timestamp(week) - pd.Timedelta(days=7)).date().isoformat()


def scores_key(prefix: str, week: str) -> str:
    """The storage key of a week's scores (``prefix`` is ``models/<name>/`` or empty)."""
    return f"{prefix}scores/week={week}.parquet"


#: The version label of batch scores in ``model_performance``: ``<version>:batch``.
BATCH_SUFFIX = ":batch"


def batch_predictions(scores: pd.DataFrame, week_start_ts: int) -> pd.DataFrame:
    """A week's scores as the predictions ``core.performance`` joins to outcomes, like the
    servers' logged ones: entity id, the scoring run as request id, version
    ``<version>:batch`` (measured beside the served predictions of the same version), the
    week's start as the time (the list is as of that week) and the probability."""
    return pd.DataFrame(
        {
            "entity_id": scores[ENTITY].astype(str).to_numpy(),
            "request_id": scores["run_id"].astype(str).to_numpy(),
            "model_version": (scores["model_version"].astype(str) + BATCH_SUFFIX).to_numpy(),
            "ts": np.full(len(scores), float(week_start_ts)),
            "probability": scores[PROBABILITY].astype(float).to_numpy(),
        }
    )


def registered_version(label: str) -> str:
    """The registry version behind a performance label (``7:batch`` -> ``7``)."""
    return label.removesuffix(BATCH_SUFFIX)


def score_table(
    ids: Sequence[object] | pd.Series, probabilities: np.ndarray, identity: ScoreIdentity
) -> pd.DataFrame:
    """The week's table, highest probability first: rank 1..n (ties by entity id), decile
    1..10 (1 = the top 10%), and ``identity`` on every row."""
    frame = pd.DataFrame(
        {ENTITY: pd.Series(ids, dtype=object).astype(str).to_numpy(), PROBABILITY: probabilities}
    )
    frame[PROBABILITY] = frame[PROBABILITY].astype(float)
    frame = frame.sort_values([PROBABILITY, ENTITY], ascending=[False, True], kind="stable")
    n = len(frame)
    frame["rank"] = np.arange(1, n + 1, dtype=np.int64)
    frame["decile"] = np.ceil(frame["rank"].to_numpy() * 10 / max(n, 1)).astype(np.int64)
    for name in ("week", "model_version", "data_version", "spec_hash", "run_id", "scored_at"):
        frame[name] = str(getattr(identity, name))
    return frame[list(SCORE_COLUMNS)].reset_index(drop=True)


def _sample(values: Sequence[object]) -> str:
    shown = [str(v) for v in list(values)[:SAMPLE_SHOWN]]
    more = len(values) - len(shown)
    return ", ".join(shown) + (f" ... {more} more" if more > 0 else "") if shown else "none"


def rows_check(scores: pd.DataFrame, validated_ids: pd.Series) -> CheckOutcome:
    """One row per validated customer: the same ids, as many rows as customers."""
    expected = pd.Index(validated_ids.astype(str))
    scored = pd.Index(scores[ENTITY].astype(str))
    missing = expected.difference(scored)
    extra = scored.difference(expected)
    passed = len(missing) == 0 and len(extra) == 0 and len(scored) == len(expected)
    text = (
        f"{len(scored)} scores for {len(expected)} validated customers"
        if passed
        else f"{len(scored)} scores for {len(expected)} validated customers: "
        f"{len(missing)} customer(s) not scored ({_sample(missing)}), {len(extra)} score(s) "
        f"for no validated customer ({_sample(extra)})"
    )
    return CheckOutcome(
        ROWS,
        passed,
        text,
        {"scores": len(scored), "customers": len(expected), "missing": len(missing)},
    )


def unique_check(scores: pd.DataFrame) -> CheckOutcome:
    """Every entity id once."""
    ids = scores[ENTITY].astype(str)
    twice = ids[ids.duplicated(keep=False)].unique()
    passed = len(twice) == 0
    text = (
        f"{len(ids)} distinct entity ids"
        if passed
        else f"{len(twice)} entity id(s) appear more than once: {_sample(twice)}"
    )
    return CheckOutcome(UNIQUE, passed, text, {"duplicated_ids": len(twice)})


def range_check(scores: pd.DataFrame) -> CheckOutcome:
    """Every probability a finite number in [0, 1]."""
    values = pd.to_numeric(scores[PROBABILITY], errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isfinite(values) & (values >= 0) & (values <= 1))
    offenders = scores.loc[bad, [ENTITY, PROBABILITY]]
    passed = not bad.any()
    text = (
        f"{len(values)} probabilities in [0, 1]"
        if passed
        else f"{int(bad.sum())} probability(ies) outside [0, 1] or not a number: "
        + _sample([f"{e}={p}" for e, p in offenders.itertuples(index=False)])
    )
    return CheckOutcome(RANGE, passed, text, {"out_of_range": int(bad.sum())})


def parity_check(
    ids: Sequence[object], batch: np.ndarray, served: np.ndarray, tolerance: float
) -> CheckOutcome:
    """The serving path's numbers equal the batch numbers on the same sample."""
    batch = np.asarray(batch, dtype=float)
    served = np.asarray(served, dtype=float)
    if len(batch) != len(served):
        text = f"{len(batch)} batch scores but {len(served)} served scores for the sample"
        return CheckOutcome(PARITY, False, text, {"sample": len(batch)})
    gap = np.abs(batch - served)
    worst = float(np.nanmax(gap)) if len(gap) else 0.0
    off = ~(gap <= tolerance)
    passed = not off.any()
    text = (
        f"{len(batch)} sampled customers: served = batch (max difference {worst:.2e} "
        f"<= {tolerance:g})"
        if passed
        else f"{int(off.sum())} of {len(batch)} sampled customers differ by more than "
        f"{tolerance:g} (max {worst:.3g}): "
        + _sample([f"{i}: {b:.6f} vs {s:.6f}" for i, b, s in zip(ids, batch, served, strict=True)])
    )
    return CheckOutcome(
        PARITY,
        passed,
        text,
        {"sample": len(batch), "max_difference": worst, "tolerance": tolerance},
    )


def score_psi(current: np.ndarray, previous: np.ndarray, bins: int = 10) -> float:
    """PSI of ``current`` scores over the previous week's decile bins."""
    previous = np.asarray(previous, dtype=float)
    current = np.asarray(current, dtype=float)
    edges = np.unique(np.quantile(previous, np.linspace(0, 1, bins + 1)[1:-1]))
    k = len(edges) + 1
    ref = np.bincount(np.searchsorted(edges, previous, side="right"), minlength=k) / len(previous)
    cur = np.bincount(np.searchsorted(edges, current, side="right"), minlength=k) / len(current)
    return psi_from_shares(ref, cur)


def psi_check(
    current: np.ndarray, previous: np.ndarray | None, previous_week_key: str, threshold: float
) -> CheckOutcome:
    """The score distribution against the previous week's (passes when there is none)."""
    if previous is None or len(previous) == 0 or len(current) == 0:
        text = f"no scores of the previous week ({previous_week_key}) to compare with"
        return CheckOutcome(PSI, True, text, {"previous_week": previous_week_key, "psi": "n/a"})
    value = score_psi(current, previous)
    passed = not (value > threshold) and not math.isnan(value)
    text = (
        f"score PSI {value:.4f} vs week {previous_week_key} "
        f"({'within' if passed else 'above'} {threshold:g})"
    )
    return CheckOutcome(
        PSI,
        passed,
        text,
        {"previous_week": previous_week_key, "psi": round(value, 6), "threshold": threshold},
    )


def deciles(scores: pd.DataFrame) -> pd.DataFrame:
    """Per decile: customers and the lowest, mean and highest probability."""
    grouped = scores.groupby("decile")[PROBABILITY]
    return pd.DataFrame(
        {
            "customers": grouped.size(),
            "min": grouped.min().round(4),
            "mean": grouped.mean().round(4),
            "max": grouped.max().round(4),
        }
    ).reset_index()
