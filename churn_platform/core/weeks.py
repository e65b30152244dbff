"""The weekly calendar of a model's data: which week a run snapshots, which weeks it trains on.

``churn_snapshot`` and ``validated_churn_data`` are partitioned by week (weeks run Sunday to
Saturday, UTC; a partition is named by its Sunday, YYYY-MM-DD). A run that names no week
takes ``week_to_run``: for a source that holds what it holds now (a file, a folder, a
database) the current week; for the synthetic world, whose clock is its own, the week after
the newest week already snapshotted, so each run draws the next week's customers as a new
week of a real table would bring. Training reads ``training_weeks`` recent validated weeks
ending at the run's week (``training_window``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

DAYS_PER_WEEK = 7
# the synthetic world's calendar: this many weeks from its first, whatever the date today
SYNTHETIC_WEEKS = 52


def sunday_of(day: str, setting: str = "week") -> str:
    """The Sunday (YYYY-MM-DD) starting the week that holds ``day``; a ``ValueError`` names
    ``setting`` and the format when ``day`` is not a date."""
    try:
        stamp = pd.Timestamp(str(day))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{setting} must be a date YYYY-MM-DD, got {day!r}") from exc
    if pd.isna(stamp):
        raise ValueError(f"{setting} must be a date YYYY-MM-DD, got {day!r}")
    stamp = stamp.normalize()
    return (stamp - pd.Timedelta(days=(stamp.dayofweek + 1) % 7)).date().isoformat()


def shift(week: str, weeks: int) -> str:
    """The week ``weeks`` after ``week`` (before, when negative)."""
    return (pd.Timestamp(week) + pd.Timedelta(days=DAYS_PER_WEEK * weeks)).date().isoformat()


@dataclass(frozen=True)
class WeeksConfig:
    """A model's weekly calendar (README settings table).

    start_date: the first week of the data partitions (``CHURN_WEEKS_START``, a Sunday).
    training_weeks: how many recent validated weeks, ending at the run's week, training
        reads (``CHURN_TRAINING_WEEKS``); the holdout stays fixed by the entity-id hash.
    """

    start_date: str = "2026-11-01"
    training_weeks: int = 1

    def __post_init__(self) -> None:
        first = sunday_of(self.start_date, "CHURN_WEEKS_START")
        if first != str(pd.Timestamp(self.start_date).date()):
            raise ValueError(
                f"CHURN_WEEKS_START must be a Sunday (weeks run Sunday to Saturday), got "
                f"{self.start_date} (a {pd.Timestamp(self.start_date).day_name()}); use {first}"
            )
        if self.training_weeks < 1:
            raise ValueError(f"CHURN_TRAINING_WEEKS must be at least 1, got {self.training_weeks}")

    @property
    def synthetic_end(self) -> str:
        """The day after the synthetic world's last week (its partitions' exclusive end)."""
        return shift(self.start_date, SYNTHETIC_WEEKS)


def week_to_run(
    snapshotted: Iterable[str],
    config: WeeksConfig,
    own_clock: bool,
    today: dt.date,
    last: str,
) -> str:
    """The week a run that names none snapshots.

    ``own_clock`` (the synthetic world): the week after the newest of ``snapshotted`` (the
    first week when there is none), never past ``last`` (the calendar's last week, drawn
    again once reached). Otherwise the week holding ``today``, never before the first.
    """
    if own_clock:
        weeks = sorted(snapshotted)
        following = shift(weeks[-1], 1) if weeks else config.start_date
        return min(max(following, config.start_date), last)
    return max(sunday_of(today.isoformat()), config.start_date)


def training_window(week: str, validated: Iterable[str], training_weeks: int) -> list[str]:
    """The validated weeks training reads for a run of ``week``: those of the
    ``training_weeks`` weeks ending at ``week`` that ``validated`` holds, oldest first.
    ``week`` itself must be validated: a ``ValueError`` says so otherwise."""
    held = set(validated)
    if week not in held:
        raise ValueError(
            f"week {week} has no validated_churn_data; materialise churn_snapshot and "
            f"validated_churn_data for partition {week} first"
        )
    wanted = [shift(week, -back) for back in range(training_weeks - 1, -1, -1)]
    return [w for w in wanted if w in held]
