"""The model server's app factory: thin routes over ``ModelService`` and the protocols'
answers (see the package docstring for the HTTP interface)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from churn_platform.serving.http_limits import BodyTimeout, BodyTooLarge, read_body
from churn_platform.serving.inference_log import open_inference_log
from churn_platform.serving.mlflow_protocol import mlflow_version_text
from churn_platform.serving.model_server.answers import (
    Answer,
    InvocationAnswers,
    PredictAnswers,
)
from churn_platform.serving.model_server.batching import MAX_BATCH_ROWS
from churn_platform.serving.model_server.faults import FaultInjector
from churn_platform.serving.model_server.instruments import ServerMetrics
from churn_platform.serving.model_server.ranges import out_of_range_in_columns
from churn_platform.serving.model_server.schema import InputError, InputSchema
from churn_platform.serving.model_server.service import Identity, ModelService
from churn_platform.serving.request_guard import RequestGuard
from churn_platform.serving.request_ids import request_id_of
from churn_platform.serving.responses import json_response
from churn_platform.serving.server_settings import ServerSettings


def create_app(
    model_uri: str,
    version: str,
    *,
    settings: ServerSettings | None = None,
    inference_log_path: str | Path | None = None,
    model: Any = None,
    input_schema: InputSchema | None = None,
    max_batch_rows: int = MAX_BATCH_ROWS,
) -> Starlette:
    """Build the ASGI app serving ``model_uri`` as model version ``version``.

    The model is loaded from MLflow (``settings.tracking_uri``) in a background thread at
    startup, so ``/health`` answers 503 until it is ready. Pass ``model`` and its
    ``input_schema`` to serve an already-loaded model. ``settings`` (default
    ``ServerSettings()``) gives the fault rate, seed and mode, the body limit and where the
    inference log goes (a file, or batch objects on an object store) unless
    ``inference_log_path`` names its file. Concurrent requests are scored together up to
    ``max_batch_rows`` rows per model call (``MicroBatcher``); 1 turns batching across
    requests off.
    """
    if not version:
        raise ValueError("create_app needs the model version label, e.g. version='3'")
    if model is not None and input_schema is None:
        raise ValueError("create_app(model=...) needs the model's input_schema too")
    settings = settings or ServerSettings()
    faults = FaultInjector(settings.fault_rate, settings.fault_seed, settings.fault_mode)
    log = open_inference_log(version, settings, inference_log_path)
    service = ModelService(model_uri, version, ServerMetrics(version), log, faults, max_batch_rows)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.metrics.loaded.labels(version).set(0)
        load_args = (settings.tracking_uri, model, input_schema)
        threading.Thread(
            target=service.load, args=load_args, name=f"load-model-{version}", daemon=True
        ).start()
        try:
            yield
        finally:
            await service.stop()

    def count(path: str, status: int, seconds: float) -> None:
        service.metrics.observe(status, seconds, path=path)

    guard = Middleware(RequestGuard, count=count)
    app = Starlette(routes=ROUTES, lifespan=lifespan, middleware=[guard])
    app.state.service = service
    app.state.settings = settings
    app.state.metrics = service.metrics
    app.state.inference_log = log
    app.state.version = version
    return app


async def _score(
    request: Request, protocol: type[PredictAnswers] | type[InvocationAnswers]
) -> Response:
    """One scoring request: read, check, score, count and answer in ``protocol``."""
    start = time.perf_counter()
    service: ModelService = request.app.state.service
    try:
        request_id = request_id_of(request.headers)
    except ValueError as exc:
        answers = protocol(service.version)
        answer = answers.refused(InputError(str(exc), 400))
    else:
        answers = protocol(service.version, request_id)
        answer = await _answer(request, service, answers, request_id)
    seconds = time.perf_counter() - start
    status = answer.status if answer.observed is None else answer.observed
    service.metrics.observe(status, seconds, answer.scores, path=answers.path)
    return json_response(answer.body, answer.status, answer.headers)


async def _answer(
    request: Request,
    service: ModelService,
    answers: PredictAnswers | InvocationAnswers,
    request_id: str,
) -> Answer:
    detail = service.not_ready()
    if detail:
        return answers.unavailable(detail)
    schema = service.input_schema()
    try:
        settings: ServerSettings = request.app.state.settings
        body = await read_body(request, settings.max_body_bytes, settings.body_read_timeout_seconds)
        received = answers.records(body, request.headers.get("content-type"), schema)
        received = service.canonical_records(received)  # raw records: the model's own mapping
        records, entity_ids = schema.split_entity_ids(received)  # ids are never model inputs
        checked = schema.admit(records)
    except BodyTooLarge as exc:
        return answers.too_large(exc)
    except BodyTimeout as exc:
        return answers.timed_out(exc)
    except InputError as exc:
        return answers.refused(exc)
    if schema.ranges is not None:  # scored, but counted: values the model was never trained on
        service.out_of_range.count(out_of_range_in_columns(checked.values, schema.ranges))
    service.leniency.count(checked.unseen, checked.ignored)  # let through, counted per field
    scored = await service.score(checked, Identity(request_id, entity_ids))
    return answers.scored(scored, entity_ids)


async def predict(request: Request) -> Response:
    """``POST /predict``."""
    return await _score(request, PredictAnswers)


async def invocations(request: Request) -> Response:
    """``POST /invocations``: MLflow's protocol over the same model, validation and log."""
    return await _score(request, InvocationAnswers)


async def health(request: Request) -> Response:
    """``GET /health``."""
    status, body = request.app.state.service.health()
    return json_response(body, status)


async def ping(request: Request) -> Response:
    """``GET /ping``: ``mlflow models serve`` answers "\\n" with 200 once the model is loaded."""
    service: ModelService = request.app.state.service
    ok = service.loaded.is_set() and not service.error
    return Response("\n", status_code=200 if ok else 503, media_type="application/json")


async def mlflow_version(request: Request) -> Response:
    """``GET /version``: the MLflow version, as ``mlflow models serve`` answers."""
    return Response(mlflow_version_text(), media_type="application/json")


async def prometheus(request: Request) -> Response:
    """``GET /metrics``."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


ROUTES = [
    Route("/predict", predict, methods=["POST"]),
    Route("/invocations", invocations, methods=["POST"]),
    Route("/health", health, methods=["GET"]),
    Route("/ping", ping, methods=["GET"]),
    Route("/version", mlflow_version, methods=["GET"]),
    Route("/metrics", prometheus, methods=["GET"]),
]
