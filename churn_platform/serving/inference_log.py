"""The model servers' inference log, written and read back as canonical rows for the drift sensor.

Two places: a JSON-lines file per version on a local disk (``InferenceLog``, read with
``read_inference_log``), or, when ``CHURN_STORAGE_URL`` is an object store,
batched Parquet objects ``<url>/inference_log/<version>/<time_ns>-<id>.parquet``
(``ObjectInferenceLog``, read with ``read_object_log``). Each batch is one PUT, atomic per
object, so a reader sees whole batches or none; replicas of one version write side by side.

Each environment has its own log, so staging checks never reach the drift sensor's input
and one process owns each file: production's (and a server started without an
environment) is ``inference_log/<version>.jsonl`` (``inference_log/<version>/`` on an
object store), what the drift sensor reads; any other environment's is
``inference_log/<environment>/<version>.jsonl`` (``inference_log/<environment>/<version>/``).
A log file holds customer rows: it is created readable by its owner only (0600).

A logged line (or row) is the record as the server accepted it, so it holds the features
of the served model's own spec (a categorical value outside ``allowed`` as sent: the drift
sensor's ``__unseen__`` bin counts it; undeclared fields dropped), plus ``unseen_fields``
and ``ignored_fields`` (lists of field names, only on a line whose record had such a value
or field), plus ``entity_id`` (the record's entity id as a string,
null when it carried none; taken out of the record, never a model input), ``request_id``
(the request's ``X-Request-Id``, given or generated, always set), ``probability``,
``model_version`` and ``ts`` (the served time, Unix seconds): what joins a prediction to
its outcome. Readers given that ``spec`` return a frame with every one of its features as
a column (None where a line lacks it) and the ``entity_id`` and ``request_id`` columns
(None in lines written before the ids were logged).

The file log is buffered and flushed every ``LOG_FLUSH_RECORDS`` records, every
``LOG_FLUSH_SECONDS`` seconds, and at shutdown. A file reaching
``CHURN_INFERENCE_LOG_MAX_BYTES`` is rotated to ``<file>.1`` (``.1`` -> ``.2`` ...), keeping
``CHURN_INFERENCE_LOG_BACKUPS`` rotated files.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from churn_platform.core.spec import Spec
from churn_platform.serving.request_ids import new_request_id
from churn_platform.serving.server_settings import (
    DEFAULT_LOG_BACKUPS,
    DEFAULT_LOG_MAX_BYTES,
    ServerSettings,
)

LOG_FLUSH_RECORDS = 512
LOG_FLUSH_SECONDS = 1.0
LOG_PREFIX = "inference_log"
#: The environment whose log keeps the unprefixed path the drift sensor reads.
DRIFT_ENVIRONMENT = "production"
_LOG_FILE_MODE = 0o600
# a batch object holds at most this many rows however the flush thresholds are set
MAX_BUFFERED_ROWS = 100_000

# a line is about 350 bytes with the shipped spec and the ids; the margin keeps max_rows whole
_TAIL_BYTES_PER_ROW = 600
#: The id columns of every logged row (beside ``probability``, ``model_version``, ``ts``).
ID_COLUMNS = ("entity_id", "request_id")


def _logged_rows(
    records: Sequence[Mapping[str, Any]],
    probabilities: Sequence[float],
    version: str,
    request_id: str | None,
    entity_ids: Sequence[str | None] | None,
    notes: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per record: its fields, its ids, its probability, the version, the time and
    its ``notes`` (``unseen_fields`` / ``ignored_fields`` where a lenient server let a value
    or a field through). ``request_id`` None (a caller outside a server) gets a fresh one
    for this call; ``entity_ids`` None means no record carried one."""
    ts = round(time.time(), 3)
    request = request_id or new_request_id()
    ids = list(entity_ids) if entity_ids is not None else [None] * len(records)
    if len(ids) != len(records):
        raise ValueError(f"{len(ids)} entity ids for {len(records)} records")
    rows = [
        {
            **r,
            "entity_id": e,
            "request_id": request,
            "probability": p,
            "model_version": version,
            "ts": ts,
        }
        for r, p, e in zip(records, probabilities, ids, strict=True)
    ]
    for row, note in zip(rows, notes or (), strict=False):
        row.update(note)
    return rows


class InferenceLog:
    """Buffered JSON-lines log of scored records (what the drift sensor reads).

    Each line is the record as received plus ``entity_id``, ``request_id``,
    ``probability``, ``model_version`` and ``ts`` (Unix seconds). Appends are in memory;
    the file is written in chunks.
    """

    def __init__(
        self,
        path: Path,
        version: str,
        *,
        flush_records: int = LOG_FLUSH_RECORDS,
        flush_seconds: float = LOG_FLUSH_SECONDS,
        max_bytes: int = DEFAULT_LOG_MAX_BYTES,
        backups: int = DEFAULT_LOG_BACKUPS,
    ) -> None:
        if max_bytes < 1 or backups < 0:
            raise ValueError(f"max_bytes must be >= 1 and backups >= 0, got {max_bytes}, {backups}")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.version = version
        self._buffer: list[str] = []
        self._flush_records = flush_records
        self._flush_seconds = flush_seconds
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(
        self,
        records: Sequence[Mapping[str, Any]],
        probabilities: Sequence[float],
        *,
        request_id: str | None = None,
        entity_ids: Sequence[str | None] | None = None,
        notes: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Buffer one line per record of one request (with its ``notes``: unseen and
        ignored fields); flush when the buffer is big or old enough."""
        rows = _logged_rows(records, probabilities, self.version, request_id, entity_ids, notes)
        lines = [json.dumps(row) for row in rows]
        with self._lock:
            self._buffer.extend(lines)
            due = (
                len(self._buffer) >= self._flush_records
                or time.monotonic() - self._last_flush >= self._flush_seconds
            )
        if due:
            self.flush()

    def flush(self) -> None:
        """Write buffered lines to the file."""
        with self._lock:
            lines, self._buffer = self._buffer, []
            self._last_flush = time.monotonic()
        if lines:
            with self._write_lock:  # one writer appends and rotates at a time
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, _LOG_FILE_MODE)
                with open(fd, "a", encoding="utf-8") as f:
                    f.write("\n".join(lines) + "\n")
                    size = f.tell()
                if size >= self.max_bytes:
                    self._rotate()

    def _rotate(self) -> None:
        """<log> -> <log>.1 -> ... -> <log>.<backups>; the oldest beyond that is deleted."""
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        oldest = rotated_path(self.path, self.backups)
        oldest.unlink(missing_ok=True)
        for n in range(self.backups - 1, 0, -1):
            older = rotated_path(self.path, n)
            if older.exists():
                os.replace(older, rotated_path(self.path, n + 1))
        os.replace(self.path, rotated_path(self.path, 1))


def rotated_path(path: Path, n: int) -> Path:
    """The ``n``-th rotated file of an inference log (``<log>.1`` is the newest)."""
    return path.with_name(f"{path.name}.{n}")


def environment_folder(folder: Path, environment: str) -> Path:
    """Where ``environment``'s logs go under an inference-log ``folder``: the folder itself
    for production (or no environment), else its ``<environment>`` subfolder."""
    if not environment or environment == DRIFT_ENVIRONMENT:
        return folder
    if "/" in environment or environment.startswith("."):
        raise ValueError(f"environment {environment!r} cannot name an inference log folder")
    return folder / environment


def inference_log_file(folder: Path, version: str, environment: str = "") -> Path:
    """The JSON-lines log of ``version`` in ``environment`` under ``folder``."""
    return environment_folder(Path(folder), environment) / f"{version}.jsonl"


def remove_inference_log(path: Path) -> list[Path]:
    """Delete a log file and its rotated files (a retired version's); return what was removed."""
    candidates = [path, *path.parent.glob(f"{path.name}.*")] if path.parent.is_dir() else []
    removed = []
    for candidate in candidates:
        suffix = candidate.name[len(path.name) :]
        if candidate == path or suffix[1:].isdigit():
            try:
                candidate.unlink()
            except FileNotFoundError:
                continue
            removed.append(candidate)
    return removed


def default_inference_log_path(version: str, settings: ServerSettings) -> Path:
    """``settings.inference_log`` (``CHURN_INFERENCE_LOG``) if set, else
    ``<home>/inference_log/<version>.jsonl`` for production (``settings.environment``) and
    ``<home>/inference_log/<environment>/<version>.jsonl`` for another environment."""
    if settings.inference_log is not None:
        return settings.inference_log
    return inference_log_file(settings.home / LOG_PREFIX, version, settings.environment)


def read_inference_log(path: Path, spec: Spec, max_rows: int = 5000) -> pd.DataFrame:
    """The newest ``max_rows`` scored requests in the log file ``path`` (an empty frame when
    there are none), with a column per feature of ``spec`` (the served model's) and the
    ``entity_id`` and ``request_id`` columns.

    Only the file's tail is read, so a sensor tick costs the same however long the log grew.
    A torn last line (a server mid-write) is ignored.
    """
    rows = _tail_rows(path, max_rows)
    if len(rows) < max_rows:
        # just rotated: the newest rows before the rotation are in <log>.1
        rows = _tail_rows(rotated_path(path, 1), max_rows - len(rows)) + rows
    return _with_features(pd.DataFrame(rows), spec)


def _with_features(frame: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    """``frame`` with a column for every feature of ``spec`` and each of ``ID_COLUMNS``
    (None-filled where absent)."""
    names = [*spec.feature_names, *ID_COLUMNS]
    if frame.empty and not len(frame.columns):
        return pd.DataFrame(columns=list(names))
    for col in names:
        if col not in frame:
            frame[col] = None
    return frame


def _tail_rows(log: Path, max_rows: int) -> list[dict[str, Any]]:
    """The last ``max_rows`` parsed lines of one JSON-lines file (none if it is missing)."""
    if not log.exists() or log.stat().st_size == 0:
        return []
    with log.open("rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - max_rows * _TAIL_BYTES_PER_ROW))
        chunk = f.read().decode("utf-8", errors="replace")
    lines = chunk.splitlines()
    if size > max_rows * _TAIL_BYTES_PER_ROW:
        lines = lines[1:]  # the first line may start mid-record
    rows = []
    for line in lines[-max_rows:]:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def object_log_folder(root: Path, version: str, environment: str = "") -> Path:
    """Where ``version``'s batches in ``environment`` go under the storage root."""
    if not version or "/" in version or version.startswith("."):
        raise ValueError(f"model version {version!r} cannot name an inference log folder")
    return environment_folder(root / LOG_PREFIX, environment) / version


class ObjectInferenceLog:
    """Scored records of one version as Parquet batch objects on an object store.

    ``append`` buffers rows (the record as received plus ``entity_id``, ``request_id``,
    ``probability``, ``model_version`` and ``ts``); a background thread writes the buffer as one object every ``flush_records``
    rows or every ``flush_seconds`` seconds, whichever comes first, so a request never waits
    for a PUT. ``flush`` writes what is buffered now (the server calls it at shutdown).
    """

    def __init__(
        self,
        root: Path,
        version: str,
        *,
        environment: str = "",
        flush_records: int = LOG_FLUSH_RECORDS,
        flush_seconds: float = LOG_FLUSH_SECONDS,
    ) -> None:
        self.folder = object_log_folder(root, version, environment)
        self.version = version
        self._rows: list[dict[str, Any]] = []
        self._flush_records = flush_records
        self._flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.batches_written = 0
        self._thread = threading.Thread(
            target=self._run, name=f"inference-log-{version}", daemon=True
        )
        self._thread.start()

    def append(
        self,
        records: Sequence[Mapping[str, Any]],
        probabilities: Sequence[float],
        *,
        request_id: str | None = None,
        entity_ids: Sequence[str | None] | None = None,
        notes: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Buffer one row per record of one request (with its ``notes``); wake the writer
        when ``flush_records`` are waiting."""
        rows = _logged_rows(records, probabilities, self.version, request_id, entity_ids, notes)
        with self._lock:
            self._rows.extend(rows)
            due = len(self._rows) >= self._flush_records
        if due:
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # the store is down: keep serving, keep the rows
                print(f"inference log: writing to {self.folder} failed: {exc}", flush=True)

    def flush(self) -> None:
        """Write the buffered rows as one object now (nothing when the buffer is empty)."""
        with self._write_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return
            name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
            buffer = io.BytesIO()
            pd.DataFrame(rows).to_parquet(buffer, index=False)
            try:
                (self.folder / name).write_bytes(buffer.getvalue())
            except BaseException:
                with self._lock:  # retried with the next batch, within a bound
                    self._rows = (rows + self._rows)[-MAX_BUFFERED_ROWS:]
                raise
            self.batches_written += 1

    def close(self) -> None:
        """Stop the writer thread and write what is left."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self.flush()


def read_object_log(root: Path, version: str, spec: Spec, max_rows: int = 5000) -> pd.DataFrame:
    """The newest ``max_rows`` rows ``version``'s servers logged under ``root`` (empty frame
    when none), with a column per feature of ``spec`` (the served model's) and the
    ``entity_id`` and ``request_id`` columns. Only the newest batches are read, so a tick costs the same however many batches there are
    (apart from listing them)."""
    folder = object_log_folder(root, version)
    try:
        names = sorted(
            (p.name for p in folder.iterdir() if p.name.endswith(".parquet")), reverse=True
        )
    except (FileNotFoundError, NotADirectoryError):  # nothing logged yet: no prefix
        names = []
    frames: list[pd.DataFrame] = []
    rows = 0
    for name in names:
        if rows >= max_rows:
            break
        with (folder / name).open("rb") as f:
            frame = pd.read_parquet(f)
        frames.append(frame)
        rows += len(frame)
    if not frames:
        return _with_features(pd.DataFrame(), spec)
    window = pd.concat(frames[::-1], ignore_index=True).tail(max_rows).reset_index(drop=True)
    return _with_features(window, spec)


def open_inference_log(
    version: str, settings: ServerSettings, path: str | Path | None = None
) -> InferenceLog | ObjectInferenceLog:
    """A model server's log: the file ``path`` if given; else batch objects under the
    storage when it is an object store; else the JSON-lines file
    ``default_inference_log_path(version, settings)``; each in ``settings.environment``'s
    place, never another environment's."""
    rotation = {
        "max_bytes": settings.inference_log_max_bytes,
        "backups": settings.inference_log_backups,
    }
    if path:
        return InferenceLog(Path(path), version, **rotation)
    if settings.storage_is_remote:
        return ObjectInferenceLog(
            settings.storage_root(), version, environment=settings.environment
        )
    return InferenceLog(default_inference_log_path(version, settings), version, **rotation)
