"""The router's app factory and its routes (see the package docstring for the interface)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from churn_platform.serving.http_limits import BodyTimeout, BodyTooLarge, read_body
from churn_platform.serving.mlflow_protocol import mlflow_version_text
from churn_platform.serving.monitoring import RouterGauges, default_psi_location, read_psi_text
from churn_platform.serving.performance_gauges import (
    PerformanceGauges,
    performance_location,
    read_text,
)
from churn_platform.serving.request_guard import RequestGuard
from churn_platform.serving.request_ids import REQUEST_ID_HEADER, request_id_of
from churn_platform.serving.responses import json_response
from churn_platform.serving.router import admin, forwarding
from churn_platform.serving.router.mirror import Mirroring, parse_mirror
from churn_platform.serving.router.table import (
    Backend,
    SmoothWeightedRoundRobin,
    load_table,
    save_table,
    table_json,
    validate_table,
)
from churn_platform.serving.server_settings import ServerSettings


class RouterState:
    """What the routes share: the weighted choice over the table (replaced whole on a
    change), the state file, the settings, the upstream client and the metrics."""

    def __init__(
        self, table: Mapping[str, Backend], state_file: Path | None, settings: ServerSettings
    ) -> None:
        self.balancer = SmoothWeightedRoundRobin(table)
        self.state_file = state_file
        self.settings = settings
        self.client: httpx.AsyncClient | None = None
        self.registry = CollectorRegistry()
        self.routed = Counter(
            "router_requests_total",
            "Requests forwarded by the router, by backend version and status.",
            ["backend", "status"],
            registry=self.registry,
        )
        self.mirroring = Mirroring(self.registry)

    def live(self) -> bool:
        """Whether some version carries traffic."""
        return any(b.weight > 0 for b in self.balancer.backends.values())

    def weights(self) -> dict[str, int]:
        """The configured table as ``{version: percent}``."""
        return {v: b.weight for v, b in self.balancer.backends.items()}


def create_router_app(
    state_file: str | Path | None = None,
    backends: Mapping[str, Backend] | None = None,
    *,
    settings: ServerSettings | None = None,
    timeout_seconds: float = 30.0,
    max_connections: int = 200,
    psi_file: str | Path | None = None,
) -> Starlette:
    """Build the router app; the table comes from ``backends`` or else ``state_file``.

    With a ``state_file``, every accepted PUT is saved there before it is answered.
    ``settings`` (default ``ServerSettings()``) gives the admin token guarding
    ``PUT /-/weights`` (without one the admin endpoint refuses every change), the bound on
    forwarded request bodies and the storage whose ``monitoring/feature_psi.json`` (or
    ``psi_file``), the drift sensor's PSI document, ``/metrics`` exports as
    ``churn_feature_psi``.
    """
    settings = settings or ServerSettings()
    path = Path(state_file) if state_file else None
    if backends is not None:
        initial = dict(backends)
        validate_table(initial)
    else:
        initial = load_table(path) if path else {}
    router = RouterState(initial, path, settings)
    psi_location: list[Path] = [Path(psi_file)] if psi_file else []

    def psi_text() -> str | None:
        if not psi_location:  # opened at the first scrape: a bad storage fails only the PSI
            psi_location.append(default_psi_location(settings))
        return read_psi_text(psi_location[0])

    router.registry.register(RouterGauges(router.weights, psi_text))

    def performance_text() -> str | None:
        if not psi_location:
            psi_location.append(default_psi_location(settings))
        return read_text(performance_location(psi_location[0]))

    router.registry.register(PerformanceGauges(performance_text))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        router.client = httpx.AsyncClient(timeout=timeout_seconds, limits=limits)
        router.mirroring.open(timeout_seconds)
        try:
            yield
        finally:
            await router.mirroring.stop()
            await router.client.aclose()

    def count(path: str, status: int, seconds: float) -> None:
        router.routed.labels("none", str(status)).inc()

    guard = Middleware(RequestGuard, count=count)
    app = Starlette(routes=ROUTES, lifespan=lifespan, middleware=[guard])
    app.state.router = router
    return app


async def _forward(request: Request, path: str) -> Response:
    router: RouterState = request.app.state.router
    try:  # the client's id, or a new one: the server logs the request under it
        request_id = request_id_of(request.headers)
    except ValueError as exc:
        router.routed.labels("none", "400").inc()
        return forwarding.bad_request_id(path, str(exc))
    backend = router.balancer.pick()
    if backend is None:
        router.routed.labels("none", "503").inc()
        return forwarding.no_traffic(path, request_id)
    settings = router.settings
    try:
        body = await read_body(request, settings.max_body_bytes, settings.body_read_timeout_seconds)
    except BodyTooLarge as exc:
        router.routed.labels(backend.version, "413").inc()
        return forwarding.too_large(path, str(exc), request_id)
    except BodyTimeout as exc:
        router.routed.labels(backend.version, "408").inc()
        return forwarding.timed_out(path, str(exc), request_id)
    assert router.client is not None
    started = time.perf_counter()
    status, answer = await forwarding.forward(
        router.client, backend, path, request, body, request_id
    )
    router.routed.labels(backend.version, status).inc()
    if router.mirroring.log is not None:
        # the copy leaves after the client's answer is ready and never changes it
        headers = {k: v for k, v in request.headers.items() if k in forwarding.FORWARDED_HEADERS}
        headers[REQUEST_ID_HEADER] = request_id  # the shadow's log names the client's request
        primary = (int(status), time.perf_counter() - started, bytes(answer.body))
        router.mirroring.maybe_copy(backend.version, path, body, headers, primary)
    return answer


async def predict(request: Request) -> Response:
    """``POST /predict``, forwarded."""
    return await _forward(request, "/predict")


async def invocations(request: Request) -> Response:
    """``POST /invocations``, forwarded."""
    return await _forward(request, forwarding.INVOCATIONS)


async def env_health(request: Request) -> Response:
    """Like a model server's /health, for the environment: 200 while a version serves."""
    router: RouterState = request.app.state.router
    table = table_json(router.balancer.backends)
    if not router.live():
        return json_response({"status": "no traffic", **table}, 503)
    return json_response({"status": "ok", **table})


async def ping(request: Request) -> Response:
    """``GET /ping``: 200 while a version serves."""
    live = request.app.state.router.live()
    return Response("\n", status_code=200 if live else 503, media_type="application/json")


async def mlflow_version(request: Request) -> Response:
    """``GET /version``: the MLflow version, as ``mlflow models serve`` answers."""
    return Response(mlflow_version_text(), media_type="application/json")


async def get_weights(request: Request) -> Response:
    """``GET /-/weights``."""
    return json_response(table_json(request.app.state.router.balancer.backends))


async def put_weights(request: Request) -> Response:
    """``PUT /-/weights``: check the token, parse, save, then swap the table."""
    router: RouterState = request.app.state.router
    denied = admin.refused(request, router.settings.router_admin_token)
    if denied is not None:
        return denied
    table = await admin.requested_table(
        request, router.balancer.backends, router.settings.body_read_timeout_seconds
    )
    if isinstance(table, Response):
        return table
    if router.state_file is not None:
        save_table(router.state_file, table)
    # one assignment: a request either sees the old table or the new one
    router.balancer = SmoothWeightedRoundRobin(table)
    router.mirroring.keep_if_listed(table)
    return json_response(table_json(table))


def _mirror_json(router: RouterState) -> dict[str, Any]:
    log = router.mirroring.log
    if log is None:
        return {"mirror": None, "record": None}
    mirror = {"version": log.mirror.version, "percent": log.mirror.percent}
    return {"mirror": mirror, "record": log.as_json()}


async def get_mirror(request: Request) -> Response:
    """``GET /-/mirror``: the mirror session and what it observed (admin token: scores)."""
    router: RouterState = request.app.state.router
    denied = admin.refused(request, router.settings.router_admin_token)
    if denied is not None:
        return denied
    return json_response(_mirror_json(router))


async def put_mirror(request: Request) -> Response:
    """``PUT /-/mirror``: start a fresh mirror session, or stop mirroring."""
    router: RouterState = request.app.state.router
    denied = admin.refused(request, router.settings.router_admin_token)
    if denied is not None:
        return denied
    payload = await admin.requested_json(request, router.settings.body_read_timeout_seconds)
    if isinstance(payload, Response):
        return payload
    try:
        mirror = parse_mirror(payload, router.balancer.backends)
    except ValueError as exc:
        return json_response({"error": str(exc)}, 422)
    router.mirroring.start(mirror)
    return json_response(_mirror_json(router))


async def health(request: Request) -> Response:
    """``GET /-/health``: the process is up, whatever the weights."""
    return json_response({"status": "ok", **table_json(request.app.state.router.balancer.backends)})


async def prometheus(request: Request) -> Response:
    """``GET /metrics``."""
    return Response(
        generate_latest(request.app.state.router.registry), media_type=CONTENT_TYPE_LATEST
    )


ROUTES = [
    Route("/predict", predict, methods=["POST"]),
    Route("/invocations", invocations, methods=["POST"]),
    Route("/health", env_health, methods=["GET"]),
    Route("/ping", ping, methods=["GET"]),
    Route("/version", mlflow_version, methods=["GET"]),
    Route("/-/weights", get_weights, methods=["GET"]),
    Route("/-/weights", put_weights, methods=["PUT"]),
    Route("/-/mirror", get_mirror, methods=["GET"]),
    Route("/-/mirror", put_mirror, methods=["PUT"]),
    Route("/-/health", health, methods=["GET"]),
    Route("/metrics", prometheus, methods=["GET"]),
]
