"""One model version being served: loading it, scoring checked requests through the
micro-batcher, fault injection and the inference log; what the routes call."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from churn_platform.core.environment import environment_report
from churn_platform.serving.model_server.batching import MicroBatcher
from churn_platform.serving.model_server.faults import FaultInjector
from churn_platform.serving.model_server.instruments import ServerMetrics
from churn_platform.serving.model_server.leniency import LeniencyCounter
from churn_platform.serving.model_server.loading import load_model
from churn_platform.serving.model_server.ranges import OutOfRangeCounter
from churn_platform.serving.model_server.raw_records import RecordMapper
from churn_platform.serving.model_server.schema import Checked, InputSchema
from churn_platform.serving.model_server.scoring import Scored, scoring_failure


class Identity(NamedTuple):
    """Who a request is about: its request id and each record's entity id (None: none)."""

    request_id: str
    entity_ids: list[str | None]


class ScoredLog(Protocol):
    """Where scored records go (a JSON-lines file, or batch objects on an object store)."""

    def append(
        self,
        records: list[Mapping[str, Any]],
        probabilities: list[float],
        *,
        request_id: str | None = None,
        entity_ids: Sequence[str | None] | None = None,
        notes: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Take one request's records, their probabilities, ids and per-record notes."""

    def flush(self) -> None:
        """Write what is buffered."""


class ModelService:
    """The model of one server: loaded by ``load`` (in a background thread at startup),
    then scoring requests with ``score``."""

    def __init__(
        self,
        model_uri: str,
        version: str,
        metrics: ServerMetrics,
        log: ScoredLog,
        faults: FaultInjector,
        max_batch_rows: int,
    ) -> None:
        self.model_uri = model_uri
        self.version = version
        self.metrics = metrics
        self.out_of_range = OutOfRangeCounter(metrics.registry, metrics.version)
        self.leniency = LeniencyCounter(metrics.registry, metrics.version)
        self.log = log
        self.faults = faults
        self.max_batch_rows = max_batch_rows
        self.pipeline: Any = None
        self.schema: InputSchema | None = None
        self.mapper: RecordMapper | None = None
        self.error = ""
        self.loaded = threading.Event()
        self.batcher: MicroBatcher | None = None
        self.environment = environment_report()  # this process's Python and pinned packages

    def load(
        self,
        tracking_uri: str | None,
        model: Any = None,
        input_schema: InputSchema | None = None,
    ) -> None:
        """Load the model from MLflow (or take ``model`` and ``input_schema``); a failure is
        kept in ``error`` for ``/health`` and printed to the log."""
        try:
            if model is not None:
                pipeline, schema = model, input_schema
            else:
                pipeline, schema = load_model(self.model_uri, tracking_uri)
            assert schema is not None
            # the model's own spec maps records as the source holds them (raw_records)
            self.schema, self.mapper = schema, RecordMapper.for_schema(schema)
            self.pipeline = pipeline  # last: a set pipeline is what makes the server ready
            self.metrics.loaded.labels(self.version).set(1)
        except Exception as exc:  # reported on /health and in the log
            self.error = f"{type(exc).__name__}: {exc}"
            print(f"model server: loading {self.model_uri} failed: {self.error}", flush=True)
        finally:
            self.loaded.set()

    def not_ready(self) -> str | None:
        """Why requests cannot be scored now, or None."""
        if self.pipeline is None:
            return self.error or "model is still loading; retry when /health answers 200"
        return None

    def input_schema(self) -> InputSchema:
        """The schema of the loaded model (only once ``not_ready`` is None)."""
        assert self.schema is not None
        return self.schema

    def canonical_records(self, records: list[Any]) -> list[Any]:
        """``records`` mapped onto the model's features with its own spec's mapping
        (``raw_records``): source column names, value maps, text typed, blanks null."""
        return records if self.mapper is None else self.mapper.canonical(records)

    async def score(self, checked: Checked, identity: Identity) -> Scored:
        """Score checked records (injected faults first), and log what was scored with the
        request's ``identity`` and each record's unseen and ignored fields."""
        records, values = checked.records, checked.values
        fault = self.faults.fault()
        if fault is not None:
            return Scored(None, 500, fault)
        if self.batcher is None:
            self.batcher = MicroBatcher(
                self.pipeline.predict_proba, self.input_schema(), self.max_batch_rows
            )
            self.batcher.start()
        try:
            scores = await self.batcher.score(values, len(records))
        except Exception as exc:
            return scoring_failure(exc, values, self.version, sorted(checked.unseen))
        scores = self.faults.shuffle(scores)
        self.log.append(
            records,
            scores.tolist(),
            request_id=identity.request_id,
            entity_ids=identity.entity_ids,
            notes=checked.notes,
        )
        return Scored(scores)

    async def stop(self) -> None:
        """Stop the batcher and write what the log buffers."""
        if self.batcher is not None:
            await self.batcher.stop()
        self.log.flush()

    def health(self) -> tuple[int, dict[str, Any]]:
        """``/health``: 200 with the inputs once loaded, else 503 ``loading`` or ``failed``."""
        if not self.loaded.is_set():
            return 503, {"status": "loading", "model_version": self.version}
        if self.error:
            return 503, {"status": "failed", "model_version": self.version, "error": self.error}
        schema = self.input_schema()
        return 200, {
            "status": "ok",
            "model_version": self.version,
            "model_uri": self.model_uri,
            "spec_hash": schema.spec.short_hash if schema.spec is not None else None,
            "inputs": [c.name for c in schema.columns],
            "environment": self.environment,
        }
