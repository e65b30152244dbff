"""Where snapshot rows come from: the synthetic generator, a file, or a SQL database.

Plain classes first (usable and testable without Dagster), then thin
``dg.ConfigurableResource`` wrappers with the same fields plus the column mapping.

API
---
* ``source.load() -> RawSnapshot``: the rows exactly as the source holds them
  (``RawSnapshot.frame``; a CSV is read as text) and ``RawSnapshot.description``
  (``kind``, ``location``, ``rows``, ``columns`` and kind-specific entries), JSON-safe.
* ``load_snapshot(source, mapping, spec=...) -> (MappedFrame, description)``: load, then
  ``core.mapping.apply_mapping`` with the table spec's mapping (the explicit ``mapping``
  merged over it). The resources expose the same as ``snapshot(spec)``; the caller passes
  the spec (a resource never reads ``CHURN_SPEC`` itself).

Every failure the user can fix (missing or empty file, unreadable file, unsupported
extension, bad URL, unreachable database, missing table, failing query) raises
``DataSourceError`` naming the file, table or URL and what to change.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from churn_platform.core import schema as s
from churn_platform.core.mapping import ColumnMapping, DataSourceError, MappedFrame, apply_mapping
from churn_platform.core.spec import Spec, columns_missing
from churn_platform.core.synthetic import (
    DEFAULT_CONTRACT_MIX,
    SyntheticSpec,
    generate,
    week_start,
)

__all__ = [
    "CSV_READ_OPTIONS",
    "FILE_SUFFIXES",
    "DataSource",
    "DataSourceError",
    "FileSource",
    "FileSourceResource",
    "RawSnapshot",
    "SqlSource",
    "SqlSourceResource",
    "SyntheticSource",
    "SyntheticSourceResource",
    "load_snapshot",
]

FILE_SUFFIXES: dict[str, str] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
CSV_READ_OPTIONS: tuple[str, ...] = ("sep", "encoding", "quotechar")
_SEPARATORS = (";", "\t", "|")


@dataclass(frozen=True)
class RawSnapshot:
    """Rows as the source holds them, and where they came from (JSON-safe)."""

    frame: pd.DataFrame
    description: dict[str, Any]


class DataSource(Protocol):
    """Anything that can hand over one snapshot of raw rows."""

    def load(self) -> RawSnapshot:
        """Read the rows; raise ``DataSourceError`` with the fix when that is impossible."""
        ...


def load_snapshot(
    source: DataSource,
    mapping: ColumnMapping | Mapping[str, Any] | None = None,
    *,
    required: Sequence[str] | None = None,
    spec: Spec,
) -> tuple[MappedFrame, dict[str, Any]]:
    """Load ``source`` and map it onto ``spec``'s columns.

    ``required`` None: every spec column. Returns the ``MappedFrame`` and the source
    description; a mapping problem raises ``DataSourceError`` prefixed with the source's
    location.
    """
    start = time.perf_counter()
    raw = source.load()
    loaded = time.perf_counter()
    try:
        mapped = apply_mapping(raw.frame, mapping, required=required, spec=spec)
    except DataSourceError as exc:
        if raw.description.get("kind") == "synthetic":
            _not_the_example_table(spec, raw.frame, exc)
        raise DataSourceError(f"{raw.description['location']}: {exc}") from exc
    # how long reading and mapping took, for the snapshot's metadata and the benchmarks
    timings = {"load": loaded - start, "map": time.perf_counter() - loaded}
    return mapped, {**raw.description, "timings_s": timings}


def _not_the_example_table(spec: Spec, frame: pd.DataFrame, exc: DataSourceError) -> None:
    """Raise a short error naming ``CHURN_SOURCE`` when ``spec`` describes another table than
    the synthetic example the default source draws (the mapping's own message would list
    every column of both and suggest renames between unrelated tables)."""
    missing = columns_missing(spec, [str(c) for c in frame.columns])
    if not missing:
        return
    shown = missing[:5] + ([f"... {len(missing) - 5} more"] if len(missing) > 5 else [])
    raise DataSourceError(
        f"the source is the synthetic example table (CHURN_SOURCE=synthetic, the default), "
        f"which lacks spec {spec.name!r}'s column(s) {shown}: read your data with "
        "CHURN_SOURCE=file CHURN_SOURCE_PATH=<file or folder> (or CHURN_SOURCE=sql), or "
        "source: {kind: file, path: ...} for the model in the platform file"
    ) from exc


def _describe(kind: str, location: str, frame: pd.DataFrame, **extra: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "location": location,
        "rows": len(frame),
        "columns": [str(c) for c in frame.columns],
        **extra,
    }


class SyntheticSource:
    """The deterministic generator (``core.synthetic``); keyword knobs are ``SyntheticSpec``'s
    fields (size, seed, drift, defects)."""

    def __init__(self, **knobs: Any) -> None:
        self.knobs = knobs

    def spec(self) -> SyntheticSpec:
        """The generator spec; invalid knobs raise ``DataSourceError`` naming the field."""
        knobs = dict(self.knobs)
        if "contract_mix" in knobs:
            knobs["contract_mix"] = tuple(knobs["contract_mix"])
        try:
            return SyntheticSpec(**knobs)
        except TypeError as exc:  # an unknown knob
            known = [f.name for f in fields(SyntheticSpec)]
            raise DataSourceError(f"synthetic source config: {exc}; known knobs: {known}") from exc
        except ValueError as exc:
            raise DataSourceError(f"synthetic source config: {exc}") from exc

    def load(self) -> RawSnapshot:
        """Generate the rows (already canonical names; mapping only types them)."""
        spec = self.spec()
        frame = generate(spec)
        params = {k: v for k, v in asdict(spec).items()}
        params["contract_mix"] = list(spec.contract_mix)
        week = spec.week
        location = f"synthetic(n_rows={spec.n_rows}, seed={spec.seed}, week={week})"
        return RawSnapshot(
            frame,
            _describe("synthetic", location, frame, spec=params, week=week, as_of=week_start(week)),
        )


def _data_files(folder: Path) -> list[Path]:
    return [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in FILE_SUFFIXES
    ]


@dataclass(frozen=True)
class FileSource:
    """A CSV or Parquet file, or a folder whose newest such file is the snapshot.

    In a folder the newest file wins by modification time, then by name; hidden
    files are ignored. CSV files are read as text (so ``00123`` stays an id and
    blanks are counted by the mapping); ``read_options`` may set ``sep``,
    ``encoding`` and ``quotechar``.
    """

    path: str | os.PathLike[str]
    read_options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.read_options) - set(CSV_READ_OPTIONS))
        if unknown:
            raise DataSourceError(
                f"read_options has unknown key(s) {unknown} for {self.path}; "
                f"supported: {list(CSV_READ_OPTIONS)}"
            )

    def resolve(self) -> Path:
        """The file to read: ``path`` itself, or the newest data file in the folder."""
        try:
            return self._resolve()
        except PermissionError as exc:
            raise DataSourceError(
                f"{self.path} cannot be read: permission denied ({exc.filename}); give the "
                f"user running the pipeline read access"
            ) from exc

    def _resolve(self) -> Path:
        path = Path(self.path).expanduser()
        if not path.exists():
            parent = path.parent
            hint = f" (folder {parent} exists)" if parent.is_dir() else ""
            raise DataSourceError(
                f"{path} does not exist{hint}; set path to a .csv or .parquet file, or a "
                f"folder holding them"
            )
        if path.is_dir():
            candidates = _data_files(path)
            if not candidates:
                found = sorted(p.name for p in path.iterdir())[:20]
                raise DataSourceError(
                    f"folder {path} holds no {sorted(FILE_SUFFIXES)} file (found {found}); "
                    f"put a snapshot file there or point path at a file"
                )
            return max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name))
        if path.suffix.lower() not in FILE_SUFFIXES:
            raise DataSourceError(
                f"{path} has unsupported extension {path.suffix or '(none)'!r}; "
                f"use one of {sorted(FILE_SUFFIXES)} (rename the file or convert it)"
            )
        return path

    def folder_files(self) -> list[Path] | None:
        """The data files of a folder source (hidden files ignored), or None when ``path`` is
        a single file or does not exist: only a folder receives new files."""
        path = Path(self.path).expanduser()
        if not path.is_dir():
            return None
        return sorted(_data_files(path))

    def load(self) -> RawSnapshot:
        """Read the resolved file (see class docstring)."""
        file = self.resolve()
        try:
            stat = file.stat()
        except OSError as exc:
            raise DataSourceError(f"{file} cannot be read: {exc}") from exc
        if stat.st_size == 0:
            raise DataSourceError(f"{file} is empty (0 bytes); write the snapshot rows into it")
        fmt = FILE_SUFFIXES[file.suffix.lower()]
        try:
            frame = self._read_csv(file) if fmt == "csv" else self._read_parquet(file)
        except PermissionError as exc:
            raise DataSourceError(
                f"{file} cannot be read: permission denied; give the user running the "
                f"pipeline read access"
            ) from exc
        if frame.empty:
            raise DataSourceError(
                f"{file} has no data rows (columns: {[str(c) for c in frame.columns]}); "
                f"write the snapshot rows into it"
            )
        modified = datetime.fromtimestamp(stat.st_mtime, tz=UTC).isoformat()
        extra: dict[str, Any] = {"format": fmt, "bytes": stat.st_size, "modified": modified}
        if Path(self.path).expanduser().is_dir():
            extra["folder"] = str(Path(self.path).expanduser())
        return RawSnapshot(frame, _describe("file", str(file), frame, **extra))

    def _read_csv(self, file: Path) -> pd.DataFrame:
        with file.open("rb") as handle:
            head = handle.read(65536)
        if b"\x00" in head:
            raise DataSourceError(
                f"{file} looks binary (it contains NUL bytes), not CSV text; export it as "
                f"CSV, or rename it .parquet if it is Parquet"
            )
        options = dict(self.read_options)
        encoding = options.get("encoding", "utf-8")
        try:
            frame = pd.read_csv(file, dtype=str, keep_default_na=False, na_filter=False, **options)
        except UnicodeDecodeError as exc:
            raise DataSourceError(
                f"{file} is not valid {encoding} text ({exc.reason} at byte {exc.start}); "
                f"set read_options encoding (e.g. 'latin-1') or check the file is CSV"
            ) from exc
        except LookupError as exc:
            raise DataSourceError(
                f"read_options encoding {encoding!r} for {file} is unknown; use e.g. 'utf-8'"
            ) from exc
        except pd.errors.EmptyDataError as exc:
            raise DataSourceError(f"{file} has no header and no rows; it is empty") from exc
        except (pd.errors.ParserError, ValueError) as exc:
            raise DataSourceError(
                f"{file} is not parseable as CSV: {str(exc).splitlines()[0]}; check the "
                f"file, or read_options sep/quotechar"
            ) from exc
        if len(frame.columns) == 1 and "sep" not in options:
            name = str(frame.columns[0])
            used = [sep for sep in _SEPARATORS if sep in name]
            if used:
                raise DataSourceError(
                    f"{file} was read as one column {name[:60]!r}; it seems to use "
                    f"{used[0]!r} as separator: set read_options sep to {used[0]!r}"
                )
        return frame

    def _read_parquet(self, file: Path) -> pd.DataFrame:
        try:
            return pd.read_parquet(file)
        except PermissionError:
            raise
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for bad files
            raise DataSourceError(
                f"{file} is not a readable Parquet file ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); re-export it, or rename it "
                f".csv if it is CSV"
            ) from exc


@dataclass(frozen=True)
class SqlSource:
    """A table (optionally in ``schema``) or a query, through a SQLAlchemy URL."""

    url: str
    table: str | None = None
    query: str | None = None
    schema: str | None = None
    connect_timeout_s: int = 10

    def __post_init__(self) -> None:
        if bool(self.table) == bool(self.query):
            raise DataSourceError(
                f"SQL source for {self.safe_url()}: set exactly one of table or query "
                f"(got table={self.table!r}, query={'set' if self.query else None})"
            )

    def safe_url(self) -> str:
        """The URL with the password hidden (for messages and metadata)."""
        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:
            return "<unparseable URL>"

    def _engine(self) -> sa.Engine:
        try:
            url = make_url(self.url)
        except Exception as exc:
            raise DataSourceError(
                f"SQL url {self.url!r} is not a valid SQLAlchemy URL; use e.g. "
                f"'postgresql+psycopg2://user@host:5432/db' or 'sqlite:///path/to/file.db'"
            ) from exc
        database = url.database or ""
        file_based = url.get_backend_name() == "sqlite" and database not in ("", ":memory:")
        if file_based and not database.startswith("file:") and not Path(database).is_file():
            raise DataSourceError(
                f"SQLite database file {database} does not exist; fix the url {self.safe_url()}"
            )
        connect_args: dict[str, Any] = {}
        if url.get_backend_name() == "postgresql":
            connect_args["connect_timeout"] = self.connect_timeout_s
        try:
            return sa.create_engine(url, connect_args=connect_args)
        except Exception as exc:  # unknown dialect or driver not installed
            raise DataSourceError(
                f"cannot use SQL url {self.safe_url()}: {exc}; install the driver or fix "
                f"the dialect"
            ) from exc

    def load(self) -> RawSnapshot:
        """Read the table or run the query."""
        engine = self._engine()
        where = self.safe_url()
        try:
            try:
                conn = engine.connect()
            except sa.exc.SQLAlchemyError as exc:
                reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
                raise DataSourceError(
                    f"cannot connect to {where}: {reason}; check host, port, database, "
                    f"credentials and that the server is running"
                ) from exc
            with conn:
                frame, location = self._read(conn, where)
        finally:
            engine.dispose()
        if frame.empty:
            raise DataSourceError(
                f"{location} returned no rows; load the snapshot into it or fix the query"
            )
        extra = {"url": where, "table": self.table, "schema": self.schema, "query": self.query}
        return RawSnapshot(frame, _describe("sql", location, frame, **extra))

    def _read(self, conn: sa.Connection, where: str) -> tuple[pd.DataFrame, str]:
        if self.table:
            qualified = f"{self.schema}.{self.table}" if self.schema else self.table
            location = f"table {qualified} at {where}"
            inspector = sa.inspect(conn)
            if not inspector.has_table(self.table, schema=self.schema):
                tables = sorted(inspector.get_table_names(schema=self.schema))[:30]
                raise DataSourceError(
                    f"table {qualified!r} not found at {where}; tables there: {tables}. "
                    f"Set table to one of them, or use query"
                )
            try:
                table = sa.Table(self.table, sa.MetaData(), schema=self.schema, autoload_with=conn)
                return pd.read_sql(sa.select(table), conn), location
            except sa.exc.SQLAlchemyError as exc:
                raise DataSourceError(f"reading {location} failed: {exc}") from exc
        location = f"query at {where}"
        try:
            return pd.read_sql_query(sa.text(str(self.query)), conn), location
        except sa.exc.SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise DataSourceError(
                f"query failed at {where}: {reason}; fix the query {self.query!r}"
            ) from exc


# --- Dagster resources ---------------------------------------------------------------


class DataSourceResource(dg.ConfigurableResource):
    """Base of every data-source resource: the column mapping (see ``core.mapping.ColumnMapping``)."""

    columns: dict[str, str] = {}
    values: dict[str, dict[str, str]] = {}
    keep_extra_columns: bool = False

    def column_mapping(self, spec: Spec) -> ColumnMapping:
        """The explicit mapping this resource applies over ``spec``'s own (names checked there)."""
        return ColumnMapping(
            columns=dict(self.columns),
            values={k: dict(v) for k, v in self.values.items()},
            keep_extra_columns=self.keep_extra_columns,
            spec=spec,
        )

    def source(self) -> DataSource:
        """The plain source object this resource configures."""
        raise NotImplementedError

    def dated(self, week: int) -> DataSourceResource:
        """This source as a snapshot of synthetic week ``week`` would read it.

        Only a synthetic source without a pinned ``as_of`` has a notion of time (it draws
        that week's customers); a file, folder or database holds what it holds now, so
        they return themselves.
        """
        return self

    def fingerprint(self, spec: Spec) -> str | None:
        """A cheap identity of the snapshot the source would load now and map onto ``spec``,
        or None when only reading it can tell (then every caller reads it). Includes the
        mapping and the spec."""
        return None

    def _mapping_key(self, spec: Spec) -> str:
        return json.dumps(self.column_mapping(spec).to_dict(), sort_keys=True, default=str) + (
            spec.hash
        )

    def load(self) -> RawSnapshot:
        """The raw rows and their description."""
        return self.source().load()

    def snapshot(
        self, spec: Spec, required: Sequence[str] | None = None
    ) -> tuple[MappedFrame, dict[str, Any]]:
        """Load and map onto ``spec``'s columns: ``(MappedFrame, description)``.

        ``required`` None: every spec column; ``required=()`` lets missing columns through
        for a check to report.
        """
        return load_snapshot(self.source(), self.column_mapping(spec), required=required, spec=spec)


class SyntheticSourceResource(DataSourceResource):
    """Synthetic snapshot rows; knobs as in ``core.synthetic.SyntheticSpec``.

    ``as_of`` (YYYY-MM-DD) pins the week drawn; empty (the default) lets the caller pick it
    with ``dated`` (``churn_snapshot`` and the drift sensor take the week after the last
    snapshot recorded on the instance) and means week 0 otherwise.
    """

    n_rows: int = 20_000
    seed: int = 7
    as_of: str = ""
    spend_shift: float = 0.0
    contract_mix: list[float] = list(DEFAULT_CONTRACT_MIX)
    invert_contract_effect: bool = False
    concept_drift: float = 0.0
    null_rate: dict[str, float] = {}
    duplicate_ids: int = 0
    out_of_range: dict[str, int] = {}

    def source(self) -> SyntheticSource:
        """The configured ``SyntheticSource``."""
        if len(self.contract_mix) != 3:
            raise DataSourceError(
                f"contract_mix must have 3 shares for {s.CONTRACT_TYPES}, got {self.contract_mix}"
            )
        knobs = [f.name for f in fields(SyntheticSpec) if f.name in type(self).model_fields]
        values = {name: getattr(self, name) for name in knobs}
        if not self.as_of:
            values.pop("as_of")  # the spec's default: week 0
        return SyntheticSource(**values)

    def dated(self, week: int) -> DataSourceResource:
        """Draw synthetic week ``week`` unless ``as_of`` pins one already."""
        if self.as_of:
            return self
        fields_now = {name: getattr(self, name) for name in type(self).model_fields}
        return SyntheticSourceResource(**{**fields_now, "as_of": week_start(week)})

    def fingerprint(self, spec: Spec) -> str | None:
        """The generator is deterministic: its knobs (the week among them) are its identity."""
        knobs = json.dumps(self.source().knobs, sort_keys=True, default=str)
        return knobs + self._mapping_key(spec)


class FileSourceResource(DataSourceResource):
    """A CSV/Parquet file or a folder of them (newest wins); see ``FileSource``."""

    path: str
    read_options: dict[str, str] = {}

    def source(self) -> FileSource:
        """The configured ``FileSource``."""
        return FileSource(self.path, dict(self.read_options))

    def fingerprint(self, spec: Spec) -> str | None:
        """The newest file's path, size and modification time (None when it cannot be found)."""
        try:
            path = self.source().resolve()
            stat = path.stat()
        except (DataSourceError, OSError):
            return None
        newest = f"{path}:{stat.st_size}:{stat.st_mtime_ns}:{self.read_options}"
        return newest + self._mapping_key(spec)


class SqlSourceResource(DataSourceResource):
    """A SQL table or query; ``url`` may come from ``dg.EnvVar`` to keep passwords out."""

    url: str
    table: str = ""
    query: str = ""
    db_schema: str = ""

    def source(self) -> SqlSource:
        """The configured ``SqlSource`` (empty strings mean unset)."""
        return SqlSource(self.url, self.table or None, self.query or None, self.db_schema or None)
