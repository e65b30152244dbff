"""One week's customers from a model's data source, for ``churn_scores``' partitions.

``week_source(resource, week, scores_query)`` gives the plain source (``load() ->
RawSnapshot``) that reads the week starting on Sunday ``week`` (YYYY-MM-DD):

* **synthetic**: that week's draw (the generator with ``as_of`` = the week's first day),
  whatever ``CHURN_SYNTHETIC_AS_OF`` pins for ``churn_snapshot``;
* **file**: ``CHURN_SOURCE_PATH`` must be a folder holding one file per week, named by the
  week's Sunday: ``<folder>/2026-11-15.parquet`` (or ``.csv``, ``.pq``). The newest of them
  is also what ``churn_snapshot`` reads from the folder;
* **sql**: the query ``CHURN_SCORES_QUERY`` (``scores_query`` of a platform file's SQL
  source) with the week's bounds as parameters ``:week_start`` (its Sunday, a date) and
  ``:week_end`` (the next Sunday, excluded), e.g. ``SELECT * FROM customers WHERE
  snapshot_date >= :week_start AND snapshot_date < :week_end``.

Anything else is a ``DataSourceError`` naming the setting to change.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from churn_platform.core.mapping import DataSourceError, MappedFrame
from churn_platform.core.spec import Spec
from churn_platform.core.synthetic import week_of
from churn_platform.resources.data_source import (
    FILE_SUFFIXES,
    DataSource,
    DataSourceResource,
    FileSource,
    FileSourceResource,
    RawSnapshot,
    SqlSource,
    SqlSourceResource,
    SyntheticSourceResource,
    load_snapshot,
)

WEEK_PARAMETERS = ("week_start", "week_end")
QUERY_SETTING = "CHURN_SCORES_QUERY (scores_query of the model's source in a platform file)"


def week_bounds(week: str) -> tuple[dt.date, dt.date]:
    """[start, end) of the week starting on ``week`` as dates."""
    start = pd.Timestamp(week).date()
    return start, start + dt.timedelta(days=7)


def week_source(resource: DataSourceResource, week: str, scores_query: str = "") -> DataSource:
    """The source of the week starting on ``week`` for ``resource``'s kind (see module)."""
    if isinstance(resource, SyntheticSourceResource):
        fields = {name: getattr(resource, name) for name in type(resource).model_fields}
        return SyntheticSourceResource(**{**fields, "as_of": week}).source()
    if isinstance(resource, FileSourceResource):
        return WeekFileSource(resource.path, week, dict(resource.read_options))
    if isinstance(resource, SqlSourceResource):
        return WeekSqlSource(resource.url, scores_query, week, resource.table)
    raise DataSourceError(
        f"{type(resource).__name__} cannot read one week; churn_scores reads CHURN_SOURCE="
        "synthetic, file (a folder of weekly files) or sql (CHURN_SCORES_QUERY)"
    )


def is_weekly_folder(path: str) -> bool:
    """Whether ``path`` is a folder holding at least one file named by a week's Sunday
    (``2026-11-15.parquet``): then ``churn_snapshot`` reads one week's file per partition."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return False
    for child in folder.iterdir():
        stem, suffix = child.stem, child.suffix.lower()
        if suffix in FILE_SUFFIXES and len(stem) == 10 and _is_date(stem):
            return True
    return False


def _is_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def partition_source(resource: DataSourceResource, week: str, week_query: str = "") -> DataSource:
    """What ``churn_snapshot`` reads for its partition ``week`` (a Sunday, YYYY-MM-DD):

    * synthetic: that week's draw (``CHURN_SYNTHETIC_AS_OF`` still pins one for every week);
    * file: a folder of weekly files (``is_weekly_folder``) gives the week's file (an error
      names the expected file when it is missing); a single file, or a folder of files not
      named by week, holds what it holds now (the file; the newest of the folder);
    * sql: the weekly query (``week_query``, ``CHURN_SCORES_QUERY``) with the week's bounds
      when one is set; else the table or query as it is now.
    """
    if isinstance(resource, SyntheticSourceResource):
        return resource.dated(week_of(week)).source()
    if isinstance(resource, FileSourceResource) and is_weekly_folder(resource.path):
        return WeekFileSource(resource.path, week, dict(resource.read_options))
    if isinstance(resource, SqlSourceResource) and week_query.strip():
        return WeekSqlSource(resource.url, week_query, week, resource.table)
    return resource.source()


def snapshot_of_week(
    resource: DataSourceResource, week: str, spec: Spec, week_query: str = ""
) -> tuple[MappedFrame, dict[str, Any]]:
    """Partition ``week``'s rows mapped onto ``spec`` (missing columns let through for the
    snapshot's check to report): ``(MappedFrame, description)``."""
    source = partition_source(resource, week, week_query)
    return load_snapshot(source, resource.column_mapping(spec), required=(), spec=spec)


def spark_input(source: DataSource) -> tuple[Any, dict[str, Any]]:
    """What the Spark engine reads for ``source`` and its description: a file's path, read by
    Spark, when the file needs no CSV ``read_options`` (only the pandas reader takes them);
    else the rows the source's reader loads, then moved into Spark."""
    if isinstance(source, WeekFileSource | FileSource) and not source.read_options:
        path = source.resolve()
        fmt = FILE_SUFFIXES[path.suffix.lower()]
        return str(path), {"kind": "file", "location": str(path), "format": fmt}
    raw = source.load()
    return raw.frame, raw.description


@dataclass(frozen=True)
class WeekFileSource:
    """The file of one week in a folder: ``<folder>/<week's Sunday>.<csv|parquet|pq>``."""

    folder: str
    week: str
    read_options: dict[str, str] = field(default_factory=dict)

    def resolve(self) -> Path:
        """The week's file; ``DataSourceError`` naming the expected name otherwise."""
        folder = Path(self.folder).expanduser()
        names = [f"{self.week}{suffix}" for suffix in FILE_SUFFIXES]
        if not folder.is_dir():
            raise DataSourceError(
                f"CHURN_SOURCE_PATH={self.folder!r} is not a folder: churn_scores reads one file "
                f"per week, named by the week's Sunday ({' or '.join(names)}); point "
                "CHURN_SOURCE_PATH at the folder holding them"
            )
        found = [folder / name for name in names if (folder / name).is_file()]
        if len(found) > 1:
            raise DataSourceError(
                f"folder {folder} holds {[p.name for p in found]} for week {self.week}; keep "
                "one file per week"
            )
        if not found:
            present = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
            raise DataSourceError(
                f"folder {folder} has no file for week {self.week}: expected "
                f"{' or '.join(names)} (found {present[:10]}); write the week's customers there"
            )
        return found[0]

    def load(self) -> RawSnapshot:
        """Read the week's file as ``FileSource`` reads any file."""
        return FileSource(self.resolve(), self.read_options).load()


@dataclass(frozen=True)
class WeekSqlSource:
    """``CHURN_SCORES_QUERY`` run with the week's bounds as ``:week_start``/``:week_end``."""

    url: str
    query: str
    week: str
    table: str = ""

    def checked_query(self) -> sa.TextClause:
        """The query as a SQL text with both parameters; ``DataSourceError`` naming the
        setting when it is missing or lacks one."""
        if not self.query.strip():
            table = f" (CHURN_SOURCE_TABLE={self.table!r} has no notion of a week)"
            raise DataSourceError(
                f"churn_scores reads a SQL source week by week: set {QUERY_SETTING} to a "
                f"query with :week_start and :week_end{table if self.table else ''}, e.g. "
                "SELECT * FROM customers WHERE snapshot_date >= :week_start AND "
                "snapshot_date < :week_end"
            )
        text = sa.text(self.query)
        lacking = [p for p in WEEK_PARAMETERS if p not in text.compile().params]
        if lacking:
            raise DataSourceError(
                f"{QUERY_SETTING} lacks the parameter(s) "
                f"{[':' + p for p in lacking]}; bound the week with both: ... WHERE "
                "snapshot_date >= :week_start AND snapshot_date < :week_end"
            )
        return text

    def load(self) -> RawSnapshot:
        """Run the query for the week (an empty week is an error naming it)."""
        text = self.checked_query()
        base = SqlSource(self.url, query=self.query)
        start, end = week_bounds(self.week)
        engine = base._engine()
        where = base.safe_url()
        try:
            with engine.connect() as conn:
                frame = pd.read_sql_query(text, conn, params={"week_start": start, "week_end": end})
        except sa.exc.SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise DataSourceError(
                f"week {self.week}: the query failed at {where}: {reason}; fix {QUERY_SETTING}"
            ) from exc
        finally:
            engine.dispose()
        if frame.empty:
            raise DataSourceError(
                f"week {self.week}: {QUERY_SETTING} returned no rows at {where} for "
                f"[{start}, {end}); load the week's customers or fix the query"
            )
        described: dict[str, Any] = {
            "kind": "sql",
            "location": f"query for week {self.week} at {where}",
            "rows": len(frame),
            "columns": [str(c) for c in frame.columns],
            "url": where,
            "query": self.query,
        }
        return RawSnapshot(frame, described)
