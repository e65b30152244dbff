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
import pyarrow as pa
import pyarrow.compute as pc

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
    entity = pd.Series(ids, dtype=object).astype(str).to_numpy()
    values = np.asarray(probabilities).astype(float)
    order = _best_first(entity, values)
    n = len(values)
    rank = np.arange(1, n + 1, dtype=np.int64)
    columns: dict[str, np.ndarray] = {
        ENTITY: entity[order],
        PROBABILITY: values[order],
        "rank": rank,
        "decile": np.ceil(rank * 10 / max(n, 1)).astype(np.int64),
    }
    for name in ("week", "model_version", "data_version", "spec_hash", "run_id", "scored_at"):
        columns[name] = np.full(n, str(getattr(identity, name)), dtype=object)
    return pd.DataFrame({name: columns[name] for name in SCORE_COLUMNS})


def _best_first(entity: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The positions in table order: probability descending, ties by entity id ascending,
    equal pairs in their given order (a stable sort). Arrow sorts in C++ comparing UTF-8
    bytes, which orders strings as Python does (by code point); a NaN probability or an id
    Arrow cannot encode takes pandas' sort (NaN last), as the table was always sorted."""
    if not np.isnan(values).any():
        try:
            keys = pa.table({"p": values, "e": pa.array(entity, type=pa.string())})
        except (pa.ArrowException, UnicodeError):
            pass
        else:
            sort_keys = [("p", "descending"), ("e", "ascending")]
            return pc.sort_indices(keys, sort_keys=sort_keys).to_numpy()
    frame = pd.DataFrame({ENTITY: entity, PROBABILITY: values})
    frame = frame.sort_values([PROBABILITY, ENTITY], ascending=[False, True], kind="stable")
    return frame.index.to_numpy()


def _sample(values: Sequence[object], total: int | None = None) -> str:
    """The first ``SAMPLE_SHOWN`` of ``values`` and how many more (of ``total``, default all
    of ``values``: a caller holding only the first few passes the full count)."""
    shown = [str(v) for v in list(values)[:SAMPLE_SHOWN]]
    more = (len(values) if total is None else total) - len(shown)
    return ", ".join(shown) + (f" ... {more} more" if more > 0 else "") if shown else "none"


def rows_check(scores: pd.DataFrame, validated_ids: pd.Series) -> CheckOutcome:
    """One row per validated customer: the same ids, as many rows as customers."""
    expected = validated_ids.astype(str).to_numpy(dtype=object)
    scored = scores[ENTITY].astype(str).to_numpy(dtype=object)
    missing, extra = _absent(expected, scored), _absent(scored, expected)
    return rows_outcome((len(scored), len(expected)), (missing, len(missing)), (extra, len(extra)))


def _absent(values: np.ndarray, other: np.ndarray) -> list[str]:
    """The distinct ``values`` not in ``other``, sorted (``Index.difference``), through
    Arrow's hash set in C++ (pandas' for ids Arrow cannot encode)."""
    try:
        left, right = pa.array(values, type=pa.string()), pa.array(other, type=pa.string())
    except (pa.ArrowException, UnicodeError):
        return list(pd.Index(values).difference(pd.Index(other)))
    absent = pc.filter(left, pc.invert(pc.is_in(left, value_set=right)))
    return sorted(pc.unique(absent).to_pylist())


def rows_outcome(
    counts: tuple[int, int],
    missing: tuple[Sequence[object], int],
    extra: tuple[Sequence[object], int],
) -> CheckOutcome:
    """``rows_check``'s outcome from (scores, customers), and (the first sorted ids, count) of
    the distinct customers not scored and of the scored ids of no customer."""
    (n_scored, n_expected), (missing_ids, n_missing), (extra_ids, n_extra) = counts, missing, extra
    passed = n_missing == 0 and n_extra == 0 and n_scored == n_expected
    text = (
        f"{n_scored} scores for {n_expected} validated customers"
        if passed
        else f"{n_scored} scores for {n_expected} validated customers: "
        f"{n_missing} customer(s) not scored ({_sample(missing_ids, n_missing)}), {n_extra} "
        f"score(s) for no validated customer ({_sample(extra_ids, n_extra)})"
    )
    return CheckOutcome(
        ROWS, passed, text, {"scores": n_scored, "customers": n_expected, "missing": n_missing}
    )


def unique_check(scores: pd.DataFrame) -> CheckOutcome:
    """Every entity id once."""
    ids = scores[ENTITY].astype(str)
    twice = ids[ids.duplicated(keep=False)].unique()
    return unique_outcome(len(ids), list(twice[:SAMPLE_SHOWN]), len(twice))


def unique_outcome(n_ids: int, first_twice: Sequence[object], n_twice: int) -> CheckOutcome:
    """``unique_check``'s outcome from the number of ids and (the first in rank order, count)
    of the ids that appear more than once."""
    passed = n_twice == 0
    text = (
        f"{n_ids} distinct entity ids"
        if passed
        else f"{n_twice} entity id(s) appear more than once: {_sample(first_twice, n_twice)}"
    )
    return CheckOutcome(UNIQUE, passed, text, {"duplicated_ids": n_twice})


def range_check(scores: pd.DataFrame) -> CheckOutcome:
    """Every probability a finite number in [0, 1]."""
    values = pd.to_numeric(scores[PROBABILITY], errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isfinite(values) & (values >= 0) & (values <= 1))
    offenders = scores.loc[bad, [ENTITY, PROBABILITY]].head(SAMPLE_SHOWN)
    shown = [f"{e}={p}" for e, p in offenders.itertuples(index=False)]
    return range_outcome(len(values), shown, int(bad.sum()))


def range_outcome(n_values: int, first_bad: Sequence[str], n_bad: int) -> CheckOutcome:
    """``range_check``'s outcome from the number of probabilities and (the first offenders in
    rank order as ``id=p``, count) of those outside [0, 1] or not a number."""
    passed = n_bad == 0
    text = (
        f"{n_values} probabilities in [0, 1]"
        if passed
        else f"{n_bad} probability(ies) outside [0, 1] or not a number: "
        + _sample(first_bad, n_bad)
    )
    return CheckOutcome(RANGE, passed, text, {"out_of_range": n_bad})


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


def psi_edges(previous: np.ndarray, bins: int = 10) -> np.ndarray:
    """The previous week's decile edges (the inner ones, distinct) that ``score_psi`` bins by."""
    previous = np.asarray(previous, dtype=float)
    return np.unique(np.quantile(previous, np.linspace(0, 1, bins + 1)[1:-1]))


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """How many of ``values`` fall in each bin of ``edges`` (bin i: edges[i-1] <= v <
    edges[i]; the Spark engine counts the same bins with the same rule)."""
    bins = np.searchsorted(edges, np.asarray(values, dtype=float), side="right")
    return np.bincount(bins, minlength=len(edges) + 1)


def score_psi(current: np.ndarray, previous: np.ndarray, bins: int = 10) -> float:
    """PSI of ``current`` scores over the previous week's decile bins."""
    edges = psi_edges(previous, bins)
    return psi_of_counts(bin_counts(current, edges), bin_counts(previous, edges))


def psi_of_counts(current: np.ndarray, previous: np.ndarray) -> float:
    """PSI from the two weeks' counts over the same bins."""
    return psi_from_shares(previous / previous.sum(), current / current.sum())


def psi_check(
    current: np.ndarray, previous: np.ndarray | None, previous_week_key: str, threshold: float
) -> CheckOutcome:
    """The score distribution against the previous week's (passes when there is none)."""
    if previous is None or len(previous) == 0 or len(current) == 0:
        return psi_outcome(None, previous_week_key, threshold)
    return psi_outcome(score_psi(current, previous), previous_week_key, threshold)


def psi_outcome(value: float | None, previous_week_key: str, threshold: float) -> CheckOutcome:
    """``psi_check``'s outcome from the PSI (None: no previous week to compare with)."""
    if value is None:
        text = f"no scores of the previous week ({previous_week_key}) to compare with"
        return CheckOutcome(PSI, True, text, {"previous_week": previous_week_key, "psi": "n/a"})
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
