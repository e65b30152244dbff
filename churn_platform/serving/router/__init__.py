"""The local weighted router: one endpoint per environment, traffic split between model versions.

``app.create_router_app(state_file, settings=...)`` returns a Starlette app that forwards ``POST /predict``
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
- Both scoring routes forward the client's ``X-Request-Id`` (checked: a bad one is a 400
  naming the header) or one the router generates to the model server, and answer it as
  ``X-Request-Id``, so the server's inference log and the router's answer agree.
- ``PUT /-/mirror`` / ``GET /-/mirror`` (admin token): the shadow step's mirror, copies of
  client requests to one version whose answers reach no one, paired with the client's answer
  (``mirror``); ``router_shadow_requests_total{backend, status}`` counts the copies.
- ``GET /health``, ``GET /ping``: 200 while some version carries traffic, else 503;
  ``GET /version``: the MLflow version (what ``mlflow models serve`` answers).
- ``GET /-/health``: 200 with the table (the process is up, whatever the weights).
- Request bodies above ``CHURN_MAX_BODY_BYTES`` get 413 before they are read; a body not all
  there after ``CHURN_BODY_READ_TIMEOUT_SECONDS`` gets 408 and its connection is closed.
- Every request passes ``serving.request_guard``: an unexpected exception is a 500 counted as
  ``router_requests_total{backend="none", status="500"}``, a client hanging up mid-body a
  499 there (one info line, no traceback).
- ``GET /metrics``: ``router_requests_total{backend, status}``, the configured
  ``churn_traffic_weight{model_version}`` and the drift sensor's latest
  ``churn_feature_psi{feature, window, model_version}`` (see ``serving/monitoring.py``).

The modules: ``table`` (the backend table and the weighted choice), ``forwarding`` (one
request to the upstream model server), ``mirror`` (the shadow copies and their record),
``admin`` (the token and the admin bodies),
``app`` (the factory and its routes); the gauges are in ``serving.monitoring``.

A backend that cannot be reached answers 502 with the reason; the router does not retry
on another version, so a broken canary shows up as errors instead of being hidden. It does
send a request once more to the same version when the pooled connection it used turns out
dead before any byte of the answer (the backend had closed it while idle).
"""
