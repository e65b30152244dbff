"""The weekly scores in a database table the CRM reads (``CHURN_SCORES_URL``).

``ScoresTableResource.upsert(table, scores)`` writes one week in one transaction (a Spark
week's Parquet file streamed in batches by ``upsert_parquet``): the table
is created when missing (primary key ``(week, entity_id)``), every row is
``INSERT ... ON CONFLICT (week, entity_id) DO UPDATE`` (re-scoring a week with a newer
champion replaces its rows), and rows of that week left by an earlier run (customers no
longer in the week) are deleted, so the table holds exactly the week's Parquet. PostgreSQL
(the target) and SQLite (both speak ``ON CONFLICT``). An empty ``url`` means no table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from churn_platform.core import scores as sc

SETTING = "CHURN_SCORES_URL"
DIALECTS = ("postgresql", "sqlite")
_KEY = ("week", sc.ENTITY)
_CHUNK = 5_000


def scores_table(name: str, metadata: sa.MetaData) -> sa.Table:
    """The table's shape: one row per (week, entity id)."""
    return sa.Table(
        name,
        metadata,
        sa.Column("week", sa.Date, primary_key=True),
        sa.Column(sc.ENTITY, sa.String(256), primary_key=True),
        sa.Column(sc.PROBABILITY, sa.Float(precision=53), nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("decile", sa.SmallInteger, nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("data_version", sa.String(64), nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    )


class ScoresTableResource(dg.ConfigurableResource):
    """Where the weekly scores are upserted; ``url`` (a SQLAlchemy URL, ``dg.EnvVar`` of
    ``CHURN_SCORES_URL``) empty: nowhere."""

    url: str = ""

    def enabled(self) -> bool:
        """Whether a database is configured."""
        return bool(self.url)

    def _engine(self) -> sa.Engine:
        try:
            url = make_url(self.url)
        except Exception as exc:
            raise ValueError(
                f"{SETTING} is not a SQLAlchemy database URL; set e.g. "
                "postgresql://user@host:5432/crm, or unset it for Parquet only"
            ) from exc
        if url.get_backend_name() not in DIALECTS:
            raise ValueError(
                f"{SETTING} names a {url.get_backend_name()!r} database; the scores table is "
                f"upserted with ON CONFLICT, which the platform does on {', '.join(DIALECTS)}"
            )
        return sa.create_engine(url)

    def safe_url(self) -> str:
        """The URL with its password hidden."""
        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:
            return "<unparseable URL>"

    def upsert(self, table: str, scores: pd.DataFrame) -> int:
        """Write one week's ``scores`` (``core.scores.SCORE_COLUMNS``) into ``table``; return
        the rows written. A database error names ``CHURN_SCORES_URL`` (password hidden)."""
        return self.upsert_batches(table, [scores])

    def upsert_parquet(self, table: str, path: Path) -> int:
        """``upsert`` of a week's Parquet file (the Spark engine's), read in batches of
        ``_CHUNK`` rows: the week is never whole in memory."""
        import pyarrow.parquet as pq

        batches = pq.ParquetFile(path).iter_batches(batch_size=_CHUNK)
        return self.upsert_batches(table, (batch.to_pandas() for batch in batches))

    def upsert_batches(self, table: str, batches: Iterable[pd.DataFrame]) -> int:
        """``upsert`` of one week given as consecutive frames, in one transaction."""
        engine = self._engine()
        target = scores_table(table, sa.MetaData())
        written, first = 0, None
        try:
            with engine.begin() as conn:
                target.create(conn, checkfirst=True)
                for scores in batches:
                    weeks = set(scores["week"].unique()) | ({first[0]} if first else set())
                    if len(weeks) > 1:
                        raise ValueError(f"upsert takes one week at a time, got {sorted(weeks)}")
                    rows = _rows(scores)
                    for start in range(0, len(rows), _CHUNK):
                        conn.execute(_upsert(engine, target), rows[start : start + _CHUNK])
                    if rows and first is None:
                        first = (scores["week"].iloc[0], rows[0]["week"], rows[0]["run_id"])
                    written += len(rows)
                if first is None:
                    raise ValueError("upsert takes one week at a time, got no rows")
                _, week, run_id = first
                conn.execute(
                    sa.delete(target).where(target.c.week == week, target.c.run_id != run_id)
                )
        except sa.exc.SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise ValueError(
                f"upserting the scores into table {table!r} at {self.safe_url()} ({SETTING}) "
                f"failed: {reason}"
            ) from exc
        finally:
            engine.dispose()
        return written

    def read_week(self, table: str, week: str) -> pd.DataFrame:
        """The rows of ``week`` in ``table``, best first (for checks and tests)."""
        engine = self._engine()
        target = scores_table(table, sa.MetaData())
        query = (
            sa.select(target)
            .where(target.c.week == pd.Timestamp(week).date())
            .order_by(target.c["rank"])
        )
        try:
            with engine.connect() as conn:
                return pd.read_sql(query, conn)
        finally:
            engine.dispose()


def _rows(scores: pd.DataFrame) -> list[dict[str, Any]]:
    frame = scores[list(sc.SCORE_COLUMNS)].copy()
    frame["week"] = pd.to_datetime(frame["week"]).dt.date
    frame["scored_at"] = pd.to_datetime(frame["scored_at"], utc=True)
    records = frame.to_dict(orient="records")
    for row in records:
        row["rank"], row["decile"] = int(row["rank"]), int(row["decile"])
        row[sc.PROBABILITY] = float(row[sc.PROBABILITY])
        if isinstance(row["scored_at"], pd.Timestamp):
            row["scored_at"] = row["scored_at"].to_pydatetime()
        if not isinstance(row["week"], dt.date):
            row["week"] = pd.Timestamp(row["week"]).date()
    return records


def _upsert(engine: sa.Engine, target: sa.Table) -> Any:
    """``INSERT ... ON CONFLICT (week, entity_id) DO UPDATE SET`` every other column."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect: Any = postgresql if engine.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(target)
    updates = {c.name: stmt.excluded[c.name] for c in target.columns if c.name not in _KEY}
    return stmt.on_conflict_do_update(index_elements=list(_KEY), set_=updates)
