"""The local weighted router: one endpoint per environment, traffic split between model versions.

``create_router_app(state_file)`` returns a Starlette app that forwards ``POST /predict``
(and MLflow's ``POST /invocations``)
to a backend chosen by smooth weighted round-robin (nginx's algorithm: deterministic,
and any window of 100 requests follows the weights to within one request).

- ``GET /-/weights``: ``{"backends": {version: {"url": u, "weight": w}}}``.
- ``PUT /-/weights``: the same shape replaces the table, e.g.
  ``{"backends": {"1": {"url": "http://127.0.0.1:8001", "weight": 95}, "2": {..., "weight": 5}}}``;
  a version already known may be given as just ``{"weight": w}`` (its URL is kept) and
  ``{"weights": {"1": 95, "2": 5}}`` changes only weights. Weights are whole percents
  summing to 100 (or all 0, which makes ``/predict`` answer 503). The change is live:
  requests in flight finish on the backend they were sent to, new ones use the new table.
  The table is written to ``state_file`` so a restarted router resumes with it.
  Needs ``Authorization: Bearer <token>`` (``CHURN_ROUTER_ADMIN_TOKEN``; ``LocalProcessTarget``
  generates one per environment into its state file, mode 0600): without it the answer is
  401 (403 when the router has no token) and the table is unchanged.
- ``POST /invocations``: MLflow's scoring protocol, forwarded like ``/predict``.
- ``GET /health``, ``GET /ping``: 200 while some version carries traffic, else 503;
  ``GET /version``: the MLflow version (what ``mlflow models serve`` answers).
- ``GET /-/health``: 200 with the table (the process is up, whatever the weights).
- Request bodies above ``CHURN_MAX_BODY_BYTES`` get 413 before they are read.
- ``GET /metrics``: ``router_requests_total{backend, status}``, the configured
  ``churn_traffic_weight{model_version}`` and the drift sensor's latest
  ``churn_feature_psi{feature, window, model_version}`` (see ``serving/monitoring.py``).

A backend that cannot be reached answers 502 with the reason; the router does not retry
on another version, so a broken canary shows up as errors instead of being hidden.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from churn_platform.serving.http_limits import BodyTooLarge, max_body_bytes, read_body
from churn_platform.serving.monitoring import RouterGauges, default_psi_location, read_psi_text

FORWARDED_HEADERS = ("content-type", "accept")
ADMIN_TOKEN_VAR = "CHURN_ROUTER_ADMIN_TOKEN"
ADMIN_BODY_BYTES = 1_000_000  # a backend table is a few hundred bytes


@dataclass(frozen=True)
class Backend:
    """One model version the router can send traffic to."""

    version: str
    url: str
    weight: int


class SmoothWeightedRoundRobin:
    """nginx's smooth weighted round-robin over an immutable backend table.

    Each pick adds every backend's weight to its running score, chooses the highest
    score and subtracts the total from it. Over ``sum(weights)`` picks each backend
    is chosen exactly ``weight`` times, interleaved rather than in bursts.
    """

    def __init__(self, backends: Mapping[str, Backend]) -> None:
        self.backends = dict(backends)
        self._live = [b for b in self.backends.values() if b.weight > 0]
        self._total = sum(b.weight for b in self._live)
        self._current = {b.version: 0 for b in self._live}

    def pick(self) -> Backend | None:
        """The next backend, or None when no backend carries traffic."""
        if not self._live:
            return None
        best = None
        best_score = 0
        current = self._current
        for b in self._live:
            score = current[b.version] + b.weight
            current[b.version] = score
            if best is None or score > best_score:
                best, best_score = b, score
        assert best is not None
        current[best.version] -= self._total
        return best


def validate_table(backends: Mapping[str, Backend]) -> None:
    """Raise ``ValueError`` (saying what to send) unless the table is a valid split."""
    for b in backends.values():
        if isinstance(b.weight, bool) or not isinstance(b.weight, int) or not 0 <= b.weight <= 100:
            raise ValueError(
                f"weight of version {b.version!r} must be a whole percent in 0..100, got {b.weight!r}"
            )
        if not b.url.startswith(("http://", "https://")):
            raise ValueError(
                f"url of version {b.version!r} must be an http(s) base URL, got {b.url!r}"
            )
    total = sum(b.weight for b in backends.values())
    if total not in (0, 100):
        split = {v: b.weight for v, b in backends.items()}
        raise ValueError(f"weights must sum to 100 (or all be 0), got {total} from {split}")


def parse_table(payload: Any, current: Mapping[str, Backend]) -> dict[str, Backend]:
    """A new backend table from a PUT body; see the module docstring for the shapes."""
    if not isinstance(payload, dict) or not ({"backends", "weights"} & set(payload)):
        raise ValueError(
            'send {"backends": {"<version>": {"url": "http://...", "weight": 50}}} '
            'or {"weights": {"<version>": 50}}'
        )
    if "weights" in payload:
        weights = payload["weights"]
        if not isinstance(weights, dict):
            raise ValueError('"weights" must map version to percent, e.g. {"1": 95, "2": 5}')
        unknown = sorted(set(weights) - set(current))
        if unknown:
            raise ValueError(
                f"unknown version(s) {unknown}; known: {sorted(current)}. "
                'Add new versions with {"backends": {...}} and their url'
            )
        table = {v: Backend(v, b.url, weights.get(v, 0)) for v, b in current.items()}
    else:
        spec = payload["backends"]
        if not isinstance(spec, dict):
            raise ValueError('"backends" must map version to {"url": ..., "weight": ...}')
        table = {}
        for version, entry in spec.items():
            if not isinstance(entry, dict) or "weight" not in entry:
                raise ValueError(f'backend {version!r} needs {{"weight": percent}} (and "url")')
            url = entry.get("url") or (current[version].url if version in current else None)
            if not url:
                raise ValueError(f"backend {version!r} is new; give its url")
            table[str(version)] = Backend(str(version), str(url).rstrip("/"), entry["weight"])
    validate_table(table)
    return table


def table_json(backends: Mapping[str, Backend]) -> dict[str, Any]:
    """The JSON shape of a backend table (what GET /-/weights returns and the file holds)."""
    return {"backends": {v: {"url": b.url, "weight": b.weight} for v, b in backends.items()}}


def load_table(state_file: Path) -> dict[str, Backend]:
    """The table saved in ``state_file`` (empty when the file does not exist)."""
    if not state_file.exists():
        return {}
    try:
        return parse_table(json.loads(state_file.read_text()), {})
    except ValueError as exc:
        raise ValueError(
            f"router state file {state_file} is invalid ({exc}); fix or delete it"
        ) from None


def save_table(state_file: Path, backends: Mapping[str, Backend]) -> None:
    """Write the table atomically (a reader never sees half a file)."""
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_suffix(state_file.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table_json(backends), indent=2))
    os.replace(tmp, state_file)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def create_router_app(
    state_file: str | Path | None = None,
    backends: Mapping[str, Backend] | None = None,
    *,
    timeout_seconds: float = 30.0,
    max_connections: int = 200,
    admin_token: str | None = None,
    max_body_bytes_: int | None = None,
    psi_file: str | Path | None = None,
) -> Starlette:
    """Build the router app; the table comes from ``backends`` or else ``state_file``.

    With a ``state_file``, every accepted PUT is saved there before it is answered.
    ``admin_token`` (default ``CHURN_ROUTER_ADMIN_TOKEN``) guards ``PUT /-/weights``;
    without one the admin endpoint refuses every change. ``max_body_bytes_`` (default
    ``CHURN_MAX_BODY_BYTES``) bounds forwarded request bodies. ``psi_file`` (default
    ``monitoring/feature_psi.json`` in the storage) is the drift sensor's PSI document that
    ``/metrics`` exports as ``churn_feature_psi``.
    """
    if admin_token is None:
        from churn_platform import settings

        admin_token = str(settings.get(ADMIN_TOKEN_VAR))
    token = admin_token
    body_limit = max_body_bytes() if max_body_bytes_ is None else max_body_bytes_
    path = Path(state_file) if state_file else None
    if backends is not None:
        initial = dict(backends)
        validate_table(initial)
    else:
        initial = load_table(path) if path else {}
    balancer = SmoothWeightedRoundRobin(initial)
    registry = CollectorRegistry()
    routed = Counter(
        "router_requests_total",
        "Requests forwarded by the router, by backend version and status.",
        ["backend", "status"],
        registry=registry,
    )
    psi_location: Path | None = Path(psi_file) if psi_file else None

    def psi_text() -> str | None:
        nonlocal psi_location
        if psi_location is None:
            psi_location = default_psi_location()
        return read_psi_text(psi_location)

    registry.register(
        RouterGauges(lambda: {v: b.weight for v, b in balancer.backends.items()}, psi_text)
    )
    client: httpx.AsyncClient | None = None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal client
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        client = httpx.AsyncClient(timeout=timeout_seconds, limits=limits)
        try:
            yield
        finally:
            await client.aclose()

    async def forward(request: Request, path: str) -> Response:
        backend = balancer.pick()
        if backend is None:
            routed.labels("none", "503").inc()
            message = "no model version carries traffic; PUT /-/weights to route some"
            if path == "/invocations":
                return _json({"error_code": "TEMPORARILY_UNAVAILABLE", "message": message}, 503)
            return _json({"error": message}, 503)
        try:
            body = await read_body(request, body_limit)
        except BodyTooLarge as exc:
            routed.labels(backend.version, "413").inc()
            if path == "/invocations":
                return _json({"error_code": "RESOURCE_LIMIT_EXCEEDED", "message": str(exc)}, 413)
            return _json({"error": str(exc)}, 413)
        headers = {k: v for k, v in request.headers.items() if k in FORWARDED_HEADERS}
        assert client is not None
        try:
            upstream = await client.post(backend.url + path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            routed.labels(backend.version, "502").inc()
            return _json(
                {
                    "error": f"model version {backend.version} at {backend.url} did not answer: "
                    f"{type(exc).__name__}: {exc}"
                },
                502,
                {"x-model-version": backend.version},
            )
        routed.labels(backend.version, str(upstream.status_code)).inc()
        return Response(
            upstream.content,
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type"),
            headers={"x-model-version": backend.version},
        )

    async def predict(request: Request) -> Response:
        return await forward(request, "/predict")

    async def invocations(request: Request) -> Response:
        return await forward(request, "/invocations")

    def live() -> bool:
        return any(b.weight > 0 for b in balancer.backends.values())

    async def env_health(request: Request) -> Response:
        """Like a model server's /health, for the environment: 200 while a version serves."""
        if not live():
            return _json({"status": "no traffic", **table_json(balancer.backends)}, 503)
        return _json({"status": "ok", **table_json(balancer.backends)})

    async def ping(request: Request) -> Response:
        return Response("\n", status_code=200 if live() else 503, media_type="application/json")

    async def mlflow_version(request: Request) -> Response:
        from churn_platform.serving.model_server import mlflow_version_text

        return Response(mlflow_version_text(), media_type="application/json")

    def refused(request: Request) -> Response | None:
        """None if the request carries the admin token, else the 401/403 answer."""
        if not token:
            return _json(
                {
                    "error": "admin endpoints are disabled: start the router with "
                    f"{ADMIN_TOKEN_VAR} set and send it as 'Authorization: Bearer <token>'"
                },
                403,
            )
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            return _json(
                {
                    "error": "PUT /-/weights needs 'Authorization: Bearer <token>'; the token "
                    "is in the environment's state file (mode 0600)"
                },
                401,
                {"www-authenticate": "Bearer"},
            )
        return None

    async def get_weights(request: Request) -> Response:
        return _json(table_json(balancer.backends))

    async def put_weights(request: Request) -> Response:
        nonlocal balancer
        denied = refused(request)
        if denied is not None:
            return denied
        try:
            payload = json.loads(await read_body(request, ADMIN_BODY_BYTES))
        except BodyTooLarge as exc:
            return _json({"error": str(exc)}, 413)
        except ValueError as exc:
            return _json({"error": f"body is not valid JSON: {exc}"}, 400)
        try:
            table = parse_table(payload, balancer.backends)
        except ValueError as exc:
            return _json({"error": str(exc)}, 422)
        if path is not None:
            save_table(path, table)
        # one assignment: a request either sees the old table or the new one
        balancer = SmoothWeightedRoundRobin(table)
        return _json(table_json(table))

    async def health(request: Request) -> Response:
        return _json({"status": "ok", **table_json(balancer.backends)})

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/invocations", invocations, methods=["POST"]),
            Route("/health", env_health, methods=["GET"]),
            Route("/ping", ping, methods=["GET"]),
            Route("/version", mlflow_version, methods=["GET"]),
            Route("/-/weights", get_weights, methods=["GET"]),
            Route("/-/weights", put_weights, methods=["PUT"]),
            Route("/-/health", health, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
