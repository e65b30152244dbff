"""The model server: one registered model version behind HTTP, with Prometheus metrics.

``create_app(model_uri, version)`` returns a Starlette app:

- ``POST /predict``: JSON ``{"records": [{column: value, ...}, ...]}`` (a bare list of
  records, or MLflow's ``{"dataframe_records": [...]}``, is accepted too). Answers
  ``{"model_version": V, "probabilities": [p, ...]}``, one churn probability per record.
  Input is checked against the spec the model was logged with (MLmodel metadata
  ``churn_spec``; a model logged before specs falls back to its signature, then to the
  shipped default spec), never against the spec that is current: the server takes the
  columns its own model was trained on. Malformed JSON is a 400, a missing / unknown /
  wrongly typed field, a value out of range (a date past 2262, a number beyond 1e12)
  or an empty batch is a 422 whose message names the record, the field, a short prefix
  of the value and what to send. A 500 means the server itself failed.
- ``POST /invocations``: MLflow's scoring protocol (``mlflow models serve``): JSON with one
  of ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``, or ``text/csv``;
  answers ``{"predictions": [p, ...]}`` (the churn probabilities ``/predict`` gives) and
  refuses bad input with MLflow's ``{"error_code": "BAD_REQUEST", "message": ...}`` (400,
  naming the field). See ``mlflow_protocol``. ``GET /ping`` and ``GET /version`` answer
  as MLflow's server does.
- ``GET /health``: 200 ``{"status": "ok"}`` once the model is loaded (with the model's
  ``spec_hash`` and ``inputs``, the columns a request must hold); 503 with
  ``"loading"`` before, or ``"failed"`` and the error if loading failed.
- ``GET /metrics``: Prometheus text. ``http_requests_total{path, status, model_version}``
  counts ``/predict`` and ``/invocations`` answers only, so health checks and scrapes never
  dilute the error rate the canary reads; ``http_request_duration_seconds`` (latency
  histogram) and ``churn_prediction_score`` (histogram of predicted probabilities).
- A request body over ``CHURN_MAX_BODY_BYTES`` (default 10 MB) is a 413, refused before it
  is read (``http_limits``).

Every scored record is appended, with its probability, to a JSON-lines inference log
(default ``$CHURN_HOME/inference_log/<version>.jsonl``) that the drift sensor reads;
lines are buffered and flushed every ``LOG_FLUSH_RECORDS`` records, every
``LOG_FLUSH_SECONDS`` seconds, and at shutdown. A file reaching
``CHURN_INFERENCE_LOG_MAX_BYTES`` is rotated to ``<file>.1`` (``.1`` -> ``.2`` ...), keeping
``CHURN_INFERENCE_LOG_BACKUPS`` rotated files.

Fault injection (tests and demos): ``CHURN_FAULT_RATE=0.5`` makes that fraction of
``/predict`` requests fail deliberately with a 500 (counted as 5xx like a real
failure) after their input passed validation; ``CHURN_FAULT_SEED`` fixes the sequence.

Scoring is micro-batched (``MicroBatcher``): a pipeline call costs about the same for
one row as for a hundred, so requests that arrive while the model is busy are scored
together in the next call, in one worker thread, while the event loop parses the next
requests. Run one process per model version with ``OMP_NUM_THREADS=1`` (the CLI sets it).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from churn_platform.core.spec import MODEL_METADATA_KEY, Spec, default_spec, spec_of_model_metadata

FAULT_RATE_VAR = "CHURN_FAULT_RATE"
FAULT_SEED_VAR = "CHURN_FAULT_SEED"
INFERENCE_LOG_VAR = "CHURN_INFERENCE_LOG"
LOG_FLUSH_RECORDS = 512
LOG_FLUSH_SECONDS = 1.0
LOG_MAX_BYTES = 100_000_000  # CHURN_INFERENCE_LOG_MAX_BYTES
LOG_BACKUPS = 5  # CHURN_INFERENCE_LOG_BACKUPS
MAX_RECORDS = 10_000
MAX_BATCH_ROWS = 1024

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 10))

# MLflow signature types -> (kind used for validation, pandas dtype)
_SIGNATURE_KINDS: dict[str, tuple[str, str]] = {
    "long": ("int", "Int64"),
    "integer": ("int", "Int64"),
    "double": ("float", "float64"),
    "float": ("float", "float64"),
    "string": ("str", "string"),
    "boolean": ("bool", "boolean"),
    "datetime": ("datetime", "datetime64[ns]"),
}
_DTYPE_KINDS: dict[str, str] = {
    "Int64": "int",
    "float64": "float",
    "string": "str",
    "boolean": "bool",
    "datetime64[ns]": "datetime",
}
_KIND_HINTS: dict[str, str] = {
    "int": "a whole number",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "datetime": "an ISO date string such as '2025-03-01'",
}


class InputError(ValueError):
    """A request the caller must fix; carries the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Column:
    """One input field the model takes."""

    name: str
    kind: str  # int | float | str | bool | datetime
    dtype: str  # pandas dtype of the column handed to the model
    categories: tuple[str, ...] = ()

    def describe(self) -> str:
        """'region (a string, one of north, south, east, west)'."""
        hint = _KIND_HINTS[self.kind]
        if self.categories:
            hint += ", one of " + ", ".join(self.categories)
        return f"{self.name} ({hint})"


class InputSchema:
    """Checks JSON records and turns them into the DataFrame the model was trained on.

    ``spec`` is the table spec the columns came from (None when built from a signature
    or by hand); the server reports its hash on ``/health``.
    """

    def __init__(self, columns: Sequence[Column], spec: Spec | None = None) -> None:
        if not columns:
            raise ValueError("InputSchema needs at least one column")
        self.columns = tuple(columns)
        self.by_name = {c.name: c for c in self.columns}
        self.spec = spec
        self._expected = ", ".join(c.describe() for c in self.columns)

    @classmethod
    def default(cls) -> InputSchema:
        """The shipped default spec's model inputs (what a model logged before specs takes)."""
        return cls.from_spec(default_spec())

    @classmethod
    def from_spec(cls, spec: Spec) -> InputSchema:
        """A spec's model inputs (``spec.feature_names``, in order) with its validated dtypes;
        a categorical feature accepts only its ``allowed`` values."""
        dtypes = spec.dtypes
        return cls(
            [
                Column(
                    name,
                    _DTYPE_KINDS[dtypes[name]],
                    dtypes[name],
                    tuple(feature.allowed or ()) if feature.kind == "categorical" else (),
                )
                for name, feature in spec.features.items()
            ],
            spec,
        )

    def in_model_order(self, pipeline: Any) -> InputSchema:
        """This schema with its columns in the order ``pipeline`` was fitted on.

        scikit-learn refuses a frame whose columns come in another order than at fit time,
        and a spec read back from MLmodel metadata has its features sorted by name (MLflow
        writes the YAML with sorted keys), so the fitted pipeline's ``feature_names_in_``
        decides the order (columns it was not fitted on, which a column transformer
        ignores, follow). A pipeline fitted on a column the schema lacks cannot score any
        request: that is an error naming it, raised when the model loads.
        """
        fitted = getattr(pipeline, "feature_names_in_", None)
        if fitted is None:
            return self
        names = [str(n) for n in fitted]
        lacking = [n for n in names if n not in self.by_name]
        if lacking:
            source = f"spec {self.spec.name!r} ({self.spec.short_hash})" if self.spec else "schema"
            raise ValueError(
                f"the model was fitted on column(s) {lacking} that its {source} does not "
                f"declare (it declares {list(self.by_name)}); log the model with the spec "
                "it was trained on"
            )
        order = names + [c.name for c in self.columns if c.name not in set(names)]
        if order == [c.name for c in self.columns]:
            return self
        return InputSchema([self.by_name[n] for n in order], self.spec)

    def example_field(self) -> tuple[str, str]:
        """(a real column, a JSON value it takes): what error messages show as an example."""
        column = next((c for c in self.columns if c.kind in ("int", "float")), self.columns[0])
        value = {"int": "3", "float": "3.5", "bool": "true", "str": '"..."'}.get(
            column.kind, '"2025-03-01"'
        )
        if column.categories:
            value = json.dumps(column.categories[0])
        return column.name, value

    def example(self) -> str:
        """A request body naming a real column, e.g. ``{"records": [{"tenure_months": 3, ...}]}``."""
        name, value = self.example_field()
        return f'{{"records": [{{"{name}": {value}, ...}}]}}'

    @classmethod
    def from_signature(cls, signature: Any) -> InputSchema:
        """From an MLflow ``ModelSignature`` with column-based inputs (else the default).

        For models logged before specs. Columns of the default spec keep its dtype and
        allowed values (what training saw); other columns get the dtype matching their
        MLflow type.
        """
        inputs = getattr(signature, "inputs", None)
        specs = getattr(inputs, "inputs", None) if inputs is not None else None
        if not specs or not all(getattr(spec, "name", None) for spec in specs):
            return cls.default()
        known = cls.default().by_name
        columns = []
        for spec in specs:
            type_name = getattr(spec.type, "name", str(spec.type))
            if spec.name in known:
                columns.append(known[spec.name])
                continue
            if type_name not in _SIGNATURE_KINDS:
                raise ValueError(
                    f"model signature column {spec.name!r} has type {type_name!r}, which the "
                    f"model server cannot take from JSON; use one of {sorted(_SIGNATURE_KINDS)}"
                )
            kind, dtype = _SIGNATURE_KINDS[type_name]
            columns.append(Column(spec.name, kind, dtype))
        return cls(columns)

    def records_from_payload(self, payload: Any) -> list[Mapping[str, Any]]:
        """The list of records in a parsed JSON body, or an ``InputError`` saying what to send."""
        if isinstance(payload, list):
            records = payload
        elif isinstance(payload, dict):
            keys = [k for k in ("records", "dataframe_records") if k in payload]
            extra = sorted(set(payload) - {"records", "dataframe_records"})
            if len(keys) != 1 or extra:
                raise InputError(
                    f"body has fields {sorted(payload)}; send one field 'records' holding a "
                    f"list of objects, e.g. {self.example()}",
                    400,
                )
            records = payload[keys[0]]
            if not isinstance(records, list):
                raise InputError(
                    f"'{keys[0]}' must be a list of objects, got {type(records).__name__}"
                )
        else:
            raise InputError(
                f"body must be a JSON object or list, got {type(payload).__name__}; "
                'send {"records": [{...}, ...]}',
                400,
            )
        if not records:
            raise InputError(
                "records is empty; send at least one record with the fields " + self._expected
            )
        if len(records) > MAX_RECORDS:
            raise InputError(
                f"{len(records)} records in one request; send at most {MAX_RECORDS} per request",
                413,
            )
        return records

    def check(self, records: Sequence[Any]) -> dict[str, list[Any]]:
        """Validate ``records``; return their values column by column (checked, converted)."""
        values: dict[str, list[Any]] = {c.name: [] for c in self.columns}
        names = self.by_name
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise InputError(
                    f"records[{i}] must be an object of field: value, got "
                    f"{type(record).__name__}; expected fields: {self._expected}"
                )
            if len(record) != len(names) or any(k not in names for k in record):
                unknown = sorted(k for k in record if k not in names)
                if unknown:
                    raise InputError(
                        f"records[{i}] has unknown field(s) {unknown}; send only: {self._expected}"
                    )
                missing = [c for c in self.columns if c.name not in record]
                raise InputError(
                    f"records[{i}] is missing field(s) " + ", ".join(c.describe() for c in missing)
                )
            for column in self.columns:
                values[column.name].append(_check(column, record[column.name], i))
        return values

    def build(self, values: Mapping[str, list[Any]]) -> pd.DataFrame:
        """The model's input frame (schema order and dtypes) from checked column values."""
        data = {}
        for column in self.columns:
            col = values[column.name]
            if column.kind == "datetime":
                data[column.name] = pd.to_datetime(pd.Series(col, dtype="object")).astype(
                    column.dtype
                )
            else:
                data[column.name] = pd.array(col, dtype=column.dtype)
        return pd.DataFrame(data)

    def frame(self, records: Sequence[Any]) -> pd.DataFrame:
        """Validate ``records`` and build the model's input frame."""
        return self.build(self.check(records))


# numbers beyond this are no real tenure, spend or count; left in, they overflow integer
# columns or the features' arithmetic and would turn a client's mistake into a 500
MAX_ABS_NUMBER = 1e12
QUOTE_CHARS = 40


def _quote(value: Any) -> str:
    """``repr(value)``, cut to a short prefix: an error message never echoes a huge input."""
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + f"... ({len(text)} chars)"


def _check(column: Column, value: Any, i: int) -> Any:
    """One value, checked and converted (None stays None: the pipeline imputes).

    Anything the model cannot take raises ``InputError`` (a 4xx) naming the record, the
    field and a short prefix of the value, never an error deeper down that would be a 500.
    """
    if value is None:
        return None
    kind = column.kind
    where = f"records[{i}].{column.name}"
    ok = True
    if kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise InputError(f"{where} must be finite, got {_quote(value)}")
    elif kind == "str":
        ok = isinstance(value, str)
        if ok and column.categories and value not in column.categories:
            raise InputError(
                f"{where} is {_quote(value)}; send one of " + ", ".join(column.categories)
            )
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "datetime":
        if not isinstance(value, str):
            ok = False
        else:
            try:
                parsed = dt.datetime.fromisoformat(value)
            except ValueError:
                ok = False
            else:
                if parsed.tzinfo is not None:
                    parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
                if not pd.Timestamp.min < parsed < pd.Timestamp.max:
                    raise InputError(
                        f"{where} is {_quote(value)}, outside the dates the model takes "
                        f"({pd.Timestamp.min.date()} to {pd.Timestamp.max.date()})"
                    )
                value = parsed
    if not ok:
        raise InputError(
            f"{where} must be {_KIND_HINTS[kind]}, got {_quote(value)} ({type(value).__name__})"
        )
    if kind in ("int", "float") and abs(value) > MAX_ABS_NUMBER:
        raise InputError(
            f"{where} is {_quote(value)}, outside the range the model takes "
            f"(-{MAX_ABS_NUMBER:g} to {MAX_ABS_NUMBER:g})"
        )
    return value


class InferenceLog:
    """Buffered JSON-lines log of scored records (what the drift sensor reads).

    Each line is the record as received plus ``probability``, ``model_version`` and
    ``ts`` (Unix seconds). Appends are in memory; the file is written in chunks.
    """

    def __init__(
        self,
        path: Path,
        version: str,
        *,
        flush_records: int = LOG_FLUSH_RECORDS,
        flush_seconds: float = LOG_FLUSH_SECONDS,
        max_bytes: int = LOG_MAX_BYTES,
        backups: int = LOG_BACKUPS,
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

    def append(self, records: Sequence[Mapping[str, Any]], probabilities: Sequence[float]) -> None:
        """Buffer one line per record; flush when the buffer is big or old enough."""
        ts = round(time.time(), 3)
        lines = [
            json.dumps({**r, "probability": p, "model_version": self.version, "ts": ts})
            for r, p in zip(records, probabilities, strict=True)
        ]
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
                with self.path.open("a", encoding="utf-8") as f:
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


def default_inference_log_path(version: str) -> Path:
    """``$CHURN_INFERENCE_LOG`` if set, else ``$CHURN_HOME/inference_log/<version>.jsonl``."""
    from churn_platform import settings

    explicit = settings.get(INFERENCE_LOG_VAR)
    if explicit:
        return Path(explicit)
    return settings.churn_home() / "inference_log" / f"{version}.jsonl"


def _settings_tracking_uri() -> str | None:
    """``MLFLOW_TRACKING_URI`` when set (None: MLflow's own default)."""
    from churn_platform import settings

    return settings.get("MLFLOW_TRACKING_URI") or None


def fault_rate_from_env() -> float:
    """``CHURN_FAULT_RATE`` as a fraction in [0, 1] (0 when unset); a bad value names the
    variable (parsed by ``settings``)."""
    from churn_platform import settings

    return float(settings.get(FAULT_RATE_VAR))


class ServerMetrics:
    """The Prometheus instruments of one server, in their own registry (no global state)."""

    def __init__(self, version: str) -> None:
        self.registry = CollectorRegistry()
        self.version = version
        self.requests = Counter(
            "http_requests_total",
            "Answers to /predict by HTTP status.",
            ["path", "status", "model_version"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time to answer /predict, seconds.",
            ["path", "model_version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.scores = Histogram(
            "churn_prediction_score",
            "Predicted churn probabilities.",
            ["model_version"],
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        )
        self.loaded = Gauge(
            "churn_model_loaded",
            "1 once the model is loaded and serving.",
            ["model_version"],
            registry=self.registry,
        )
        self.records = Counter(
            "churn_scored_records_total",
            "Records scored (a request may hold many).",
            ["model_version"],
            registry=self.registry,
        )
        # children resolved once: label lookups cost more than the increments
        self._latency = self.latency.labels("/predict", version)
        self._scores = self.scores.labels(version)
        self._records = self.records.labels(version)
        self._by_status: dict[tuple[str, int], Any] = {}
        for status in (200, 400, 422, 500, 503):
            self._by_status[("/predict", status)] = self.requests.labels(
                "/predict", str(status), version
            )

    def observe(
        self,
        status: int,
        seconds: float,
        scores: np.ndarray | None = None,
        path: str = "/predict",
    ) -> None:
        """Count one scoring answer (``/predict`` or ``/invocations``); record latency, scores."""
        key = (path, status)
        child = self._by_status.get(key)
        if child is None:
            child = self._by_status[key] = self.requests.labels(path, str(status), self.version)
        child.inc()
        if path == "/predict":
            self._latency.observe(seconds)
        else:
            self.latency.labels(path, self.version).observe(seconds)
        if scores is not None:
            self._records.inc(len(scores))
            observe = self._scores.observe
            for p in scores:
                observe(float(p))


class MicroBatcher:
    """Scores concurrent requests together: one ``predict_proba`` call per batch.

    A sklearn pipeline costs about the same for 1 row as for 100 (the per-call overhead of
    the column transformer dominates), so requests that arrive while the model is busy
    are queued and scored in the next call. A lone request is scored at once, so there is
    no added latency at low load. ``predict`` runs in one worker thread, leaving the event
    loop free to parse and validate the next requests meanwhile. If a batch fails, its
    requests are scored one by one so only the faulty one gets the error.
    """

    def __init__(
        self,
        predict: Callable[[pd.DataFrame], np.ndarray],
        schema: InputSchema,
        max_batch_rows: int = MAX_BATCH_ROWS,
    ) -> None:
        if max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be >= 1, got {max_batch_rows}")
        self._predict = predict
        self._schema = schema
        self._max_rows = max_batch_rows
        self._queue: asyncio.Queue[tuple[dict[str, list[Any]], int, asyncio.Future[Any]]] = (
            asyncio.Queue()
        )
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="predict")
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # predict calls made, for tests and curiosity

    def start(self) -> None:
        """Start the batching task on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the task and the worker thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def score(self, values: dict[str, list[Any]], n_rows: int) -> np.ndarray:
        """Probabilities for one request's checked column values (raises what predict raised)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((values, n_rows, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            rows = batch[0][1]
            while rows < self._max_rows and not self._queue.empty():
                item = self._queue.get_nowait()
                batch.append(item)
                rows += item[1]
            try:
                outcomes = await loop.run_in_executor(self._executor, self._score_batch, batch)
            except Exception as exc:  # the batch machinery itself failed
                outcomes = [exc] * len(batch)
            for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # the client went away
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def _score_batch(self, batch: list[tuple[dict[str, list[Any]], int, Any]]) -> list[Any]:
        self.batches += 1
        if len(batch) == 1:
            values = batch[0][0]
        else:
            values = {name: [] for name in batch[0][0]}
            for item_values, _, _ in batch:
                for name, col in item_values.items():
                    values[name].extend(col)
        try:
            scores = self._probabilities(values)
        except Exception as exc:
            if len(batch) == 1:
                return [exc]
            return [self._score_alone(item[0]) for item in batch]
        out, start = [], 0
        for _, n_rows, _ in batch:
            out.append(scores[start : start + n_rows])
            start += n_rows
        return out

    def _score_alone(self, values: dict[str, list[Any]]) -> Any:
        try:
            return self._probabilities(values)
        except Exception as exc:
            return exc

    def _probabilities(self, values: Mapping[str, list[Any]]) -> np.ndarray:
        frame = self._schema.build(values)
        return np.asarray(self._predict(frame)[:, 1], dtype=float)


class _Model:
    """Holds the loaded model; filled by a background thread at startup."""

    def __init__(self) -> None:
        self.pipeline: Any = None
        self.schema: InputSchema | None = None
        self.error: str = ""
        self.loaded = threading.Event()
        self.batcher: MicroBatcher | None = None


def model_spec(model_uri: str, tracking_uri: str | None = None) -> Spec:
    """The spec ``model_uri`` was logged with (its MLmodel metadata ``churn_spec``); the
    shipped default spec for a model logged before specs."""
    import mlflow
    from mlflow.models import get_model_info

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return spec_of_model_metadata(get_model_info(model_uri).metadata)


def schema_of_model_info(info: Any) -> InputSchema:
    """The request schema of a logged model (an MLflow ``ModelInfo``): its spec's features
    when it carries one, else its signature's columns, else the default spec's."""
    metadata = info.metadata or {}
    if MODEL_METADATA_KEY in metadata:
        return InputSchema.from_spec(spec_of_model_metadata(metadata))
    if info.signature:
        return InputSchema.from_signature(info.signature)
    return InputSchema.default()


def load_model(model_uri: str, tracking_uri: str | None = None) -> tuple[Any, InputSchema]:
    """Load the sklearn model and its input schema from MLflow.

    The schema follows the model's own spec (``schema_of_model_info``), so a server keeps
    taking the columns its model was trained on whatever spec is current now.
    """
    import tempfile

    import mlflow
    import mlflow.sklearn
    from mlflow.models import get_model_info

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    # Copy to a temp dir ($TMPDIR, /tmp in the pod): from a local artefact store MLflow
    # would load in place and write registered_model_meta into the store, which a
    # read-only mount refuses. The pickle is in memory once loaded.
    with tempfile.TemporaryDirectory(prefix="churn-model-") as dst:
        pipeline = mlflow.sklearn.load_model(model_uri, dst_path=dst)
    return pipeline, schema_of_model_info(get_model_info(model_uri)).in_model_order(pipeline)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def mlflow_version_text() -> str:
    """The installed MLflow's version, what ``mlflow models serve`` answers on /version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlflow")
    except PackageNotFoundError:
        return "unknown"


def create_app(
    model_uri: str,
    version: str,
    *,
    tracking_uri: str | None = None,
    inference_log_path: str | Path | None = None,
    fault_rate: float | None = None,
    fault_seed: int | None = None,
    model: Any = None,
    input_schema: InputSchema | None = None,
    max_batch_rows: int = MAX_BATCH_ROWS,
    max_body_bytes_: int | None = None,
) -> Starlette:
    """Build the ASGI app serving ``model_uri`` as model version ``version``.

    The model is loaded from MLflow (``tracking_uri``, else ``MLFLOW_TRACKING_URI``) in
    a background thread at startup, so ``/health`` answers 503 until it is ready.
    Pass ``model`` (and optionally ``input_schema``) to serve an already-loaded model.
    ``fault_rate`` / ``fault_seed`` default to ``CHURN_FAULT_RATE`` / ``CHURN_FAULT_SEED``;
    ``inference_log_path`` defaults to ``default_inference_log_path(version)``.
    Concurrent requests are scored together up to ``max_batch_rows`` rows per model call
    (``MicroBatcher``); 1 turns batching across requests off.
    """
    if not version:
        raise ValueError("create_app needs the model version label, e.g. version='3'")
    rate = fault_rate_from_env() if fault_rate is None else fault_rate
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"fault_rate must be a fraction in [0, 1], got {rate!r}")
    if fault_seed is None:
        from churn_platform import settings

        fault_seed = settings.get(FAULT_SEED_VAR)
    rng = random.Random(fault_seed)
    from churn_platform.serving.http_limits import BodyTooLarge, max_body_bytes, read_body
    from churn_platform.serving.inference_log import open_inference_log
    from churn_platform.serving.mlflow_protocol import error_body, records_from_invocation

    body_limit = max_body_bytes() if max_body_bytes_ is None else max_body_bytes_

    log = open_inference_log(version, inference_log_path)  # batch objects on an object store
    metrics = ServerMetrics(version)
    holder = _Model()
    uri = tracking_uri or _settings_tracking_uri()

    def load() -> None:
        try:
            if model is not None:
                holder.pipeline = model
                holder.schema = input_schema or InputSchema.default()
            else:
                holder.pipeline, holder.schema = load_model(model_uri, uri)
            metrics.loaded.labels(version).set(1)
        except Exception as exc:  # reported on /health and in the log
            holder.error = f"{type(exc).__name__}: {exc}"
            print(f"model server: loading {model_uri} failed: {holder.error}", flush=True)
        finally:
            holder.loaded.set()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        metrics.loaded.labels(version).set(0)
        thread = threading.Thread(target=load, name=f"load-model-{version}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            if holder.batcher is not None:
                await holder.batcher.stop()
            log.flush()

    async def health(request: Request) -> Response:
        if not holder.loaded.is_set():
            return _json({"status": "loading", "model_version": version}, 503)
        if holder.error:
            return _json({"status": "failed", "model_version": version, "error": holder.error}, 503)
        schema = schema_of()
        return _json(
            {
                "status": "ok",
                "model_version": version,
                "model_uri": model_uri,
                "spec_hash": schema.spec.short_hash if schema.spec is not None else None,
                "inputs": [c.name for c in schema.columns],
            }
        )

    async def score(
        records: list[Mapping[str, Any]], values: dict[str, list[Any]]
    ) -> tuple[np.ndarray | None, int, str]:
        """(scores, 200, "") or (None, status, error) for checked records."""
        if rate and rng.random() < rate:
            return None, 500, f"injected fault ({FAULT_RATE_VAR}={rate})"
        if holder.batcher is None:
            holder.batcher = MicroBatcher(
                holder.pipeline.predict_proba, schema_of(), max_batch_rows
            )
            holder.batcher.start()
        try:
            scores = await holder.batcher.score(values, len(records))
        except Exception as exc:
            nulls = [name for name, col in values.items() if any(v is None for v in col)]
            if nulls:
                # the model cannot impute: the caller must send values
                return (
                    None,
                    422,
                    f"model version {version} cannot score missing values in "
                    f"{nulls} ({type(exc).__name__}: {_quote(str(exc))}); send a value for each",
                )
            return None, 500, f"scoring failed: {type(exc).__name__}: {_quote(str(exc))}"
        log.append(records, scores.tolist())
        return scores, 200, ""

    def schema_of() -> InputSchema:
        assert holder.schema is not None
        return holder.schema

    def not_loaded() -> str | None:
        if holder.pipeline is None:
            return holder.error or "model is still loading; retry when /health answers 200"
        return None

    async def predict(request: Request) -> Response:
        start = time.perf_counter()
        detail = not_loaded()
        if detail:
            metrics.observe(503, time.perf_counter() - start)
            return _json({"error": detail, "model_version": version}, 503)
        schema = schema_of()
        try:
            body = await read_body(request, body_limit)
            try:
                payload = json.loads(body)
            except ValueError as exc:
                raise InputError(
                    f"body is not valid JSON ({_quote(str(exc))}); send "
                    f"{schema.example()} with Content-Type application/json",
                    400,
                ) from None
            records = schema.records_from_payload(payload)
            values = schema.check(records)
        except BodyTooLarge as exc:
            metrics.observe(413, time.perf_counter() - start)
            return _json({"error": str(exc), "model_version": version}, 413)
        except InputError as exc:
            metrics.observe(exc.status, time.perf_counter() - start)
            return _json({"error": str(exc), "model_version": version}, exc.status)
        scores, status, error = await score(records, values)
        metrics.observe(status, time.perf_counter() - start, scores)
        if scores is None:
            return _json({"error": error, "model_version": version}, status)
        return _json({"model_version": version, "probabilities": scores.tolist()})

    async def invocations(request: Request) -> Response:
        """MLflow's scoring protocol: the same model, validation and log as /predict."""
        start = time.perf_counter()
        headers = {"x-model-version": version}
        detail = not_loaded()
        if detail:
            metrics.observe(503, time.perf_counter() - start, path="/invocations")
            return _json({"error_code": "TEMPORARILY_UNAVAILABLE", "message": detail}, 503, headers)
        schema = schema_of()
        try:
            body = await read_body(request, body_limit)
            records = records_from_invocation(body, request.headers.get("content-type"), schema)
            values = schema.check(records)
        except BodyTooLarge as exc:
            metrics.observe(413, time.perf_counter() - start, path="/invocations")
            return _json(
                {"error_code": "RESOURCE_LIMIT_EXCEEDED", "message": str(exc)}, 413, headers
            )
        except InputError as exc:
            # MLflow answers every input problem with 400 BAD_REQUEST; so do we
            status = exc.status if exc.status in (413, 415) else 400
            metrics.observe(status, time.perf_counter() - start, path="/invocations")
            return _json(error_body(exc), status, headers)
        scores, status, error = await score(records, values)
        metrics.observe(status, time.perf_counter() - start, scores, path="/invocations")
        if scores is None:
            code = "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
            return _json(
                {"error_code": code, "message": error}, 400 if status < 500 else status, headers
            )
        return _json({"predictions": scores.tolist()}, 200, headers)

    async def ping(request: Request) -> Response:
        # mlflow models serve answers "\n" with 200 once the model is loaded
        ok = holder.loaded.is_set() and not holder.error
        return Response("\n", status_code=200 if ok else 503, media_type="application/json")

    async def mlflow_version(request: Request) -> Response:
        return Response(mlflow_version_text(), media_type="application/json")

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/invocations", invocations, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/ping", ping, methods=["GET"]),
            Route("/version", mlflow_version, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.inference_log = log
    app.state.version = version
    return app
