"""The model server: one registered model version behind HTTP, with Prometheus metrics.

``app.create_app(model_uri, version, settings)`` returns a Starlette app:

- ``POST /predict``: JSON ``{"records": [{column: value, ...}, ...]}`` (a bare list of
  records, or MLflow's ``{"dataframe_records": [...]}``, is accepted too). Answers
  ``{"model_version": V, "probabilities": [p, ...]}``, one churn probability per record.
  Input is checked against the spec the model was logged with (MLmodel metadata
  ``churn_spec``; a model logged before specs falls back to its signature, then to the
  shipped default spec), never against the spec that is current: the server takes the
  columns its own model was trained on. Malformed JSON is a 400, a missing or wrongly
  typed field, a value out of range (a date past 2262, a number beyond 1e12)
  or an empty batch is a 422 whose message names the record, the field, a short prefix
  of the value and what to send. A 500 means the server itself failed. Lenient where
  MLflow is (``leniency``): a categorical value outside the spec's ``allowed`` list is
  scored as the model handles an unknown value and an undeclared field is ignored, both
  counted per field on ``/metrics`` and named on the record's log line; the spec's
  ``serving:`` section can refuse either (a 422 naming the field).
- ``POST /invocations``: MLflow's scoring protocol (``mlflow models serve``): JSON with one
  of ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``, or ``text/csv``;
  answers ``{"predictions": [p, ...]}`` (the churn probabilities ``/predict`` gives) and
  refuses bad input with MLflow's ``{"error_code": "BAD_REQUEST", "message": ...}`` (400,
  naming the field). See ``mlflow_protocol``. ``GET /ping`` and ``GET /version`` answer
  as MLflow's server does.
- Ids (``serving.request_ids``): both scoring routes take an optional ``X-Request-Id``
  header (else generate one) and answer it as ``X-Request-Id`` (and ``request_id`` in a
  scored body); a record may carry the spec's entity id column (``customer_id``), taken
  out before the check so it never reaches the model, echoed as ``entity_ids`` (one per
  prediction, null for a record without one) when some record carried one. A bad request
  id is a 400 naming the header, a bad entity id a 4xx naming the record and field.
- ``GET /health``: 200 ``{"status": "ok"}`` once the model is loaded (with the model's
  ``spec_hash`` and ``inputs``, the columns a request must hold); 503 with
  ``"loading"`` before, or ``"failed"`` and the error if loading failed.
- ``GET /metrics``: Prometheus text. ``http_requests_total{path, status, model_version}``
  counts ``/predict`` and ``/invocations`` answers (and an unexpected 500 on any path), so
  health checks and scrapes never dilute the error rate the canary reads;
  ``http_request_duration_seconds`` (latency histogram) and ``churn_prediction_score``
  (histogram of predicted probabilities); ``churn_out_of_range_values_total``,
  ``churn_model_unseen_values_total`` and ``churn_model_ignored_fields_total`` (per
  ``field``) count what was scored or ignored rather than refused.
- A request body over ``CHURN_MAX_BODY_BYTES`` (default 10 MB) is a 413, refused before it
  is read; one not all there after ``CHURN_BODY_READ_TIMEOUT_SECONDS`` is a 408 and its
  connection closed; JSON nested deeper than 64 levels is a 400 (``http_limits``).
- Every request passes ``serving.request_guard``: an unexpected exception is answered and
  counted as a 500, a client hanging up mid-body counted as 499 (one info line).

The variables are read once, by ``python -m churn_platform.serving``, into a
``ServerSettings`` that ``create_app`` takes.

Every scored record is appended, with its entity id, request id and probability, to a
JSON-lines inference log
(default ``$CHURN_HOME/inference_log/<version>.jsonl`` in production, which the drift
sensor reads; ``$CHURN_HOME/inference_log/<environment>/<version>.jsonl`` for a server
started with another ``--environment``); ``serving.inference_log`` buffers, flushes and
rotates it.

Fault injection (tests and demos): ``CHURN_FAULT_RATE=0.5`` makes that fraction of
``/predict`` requests fail deliberately with a 500 (counted as 5xx like a real
failure) after their input passed validation; ``CHURN_FAULT_SEED`` fixes the sequence;
``CHURN_FAULT_MODE=shuffle`` answers that fraction with other records' scores instead (no
error, the ranking lost: what the shadow step's rank correlation catches).

Scoring is micro-batched (``batching.MicroBatcher``): a pipeline call costs about the same for
one row as for a hundred, so requests that arrive while the model is busy are scored
together in the next call, in one worker thread, while the event loop parses the next
requests; a lone small request (nothing else queued or being scored) is scored at once on
the event loop, without the hop to the worker thread and back. Run one process per model
version with ``OMP_NUM_THREADS=1`` (the CLI sets it).

A record as the source holds it (source column names, labels such as ``"Yes"``, numbers as
text, blank cells) is mapped with the model's own spec before the check (``raw_records``);
a canonical record passes unchanged.

The modules, one job each: ``raw_records`` (records as the source holds them, mapped with
the model's spec), ``schema`` (request fields, checks, the model's input frame),
``scoring`` (probabilities and scoring failures, no HTTP), ``answers`` (each protocol's
bodies and statuses, no HTTP), ``batching``, ``faults``, ``instruments`` (Prometheus),
``loading`` (the model and its schema from MLflow), ``ranges`` and ``leniency`` (what was
let through, counted), ``service`` (one served version) and
``app`` (the factory and its thin routes).
"""
