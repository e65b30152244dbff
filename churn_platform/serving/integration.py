"""Layer 4: integration checks against a running model server (health, contract, latency, parity).

Requests are built from the columns of the served model's own spec (``spec``), which may
differ from the spec that is current: a server takes the
columns its model was trained on.
"""

from __future__ import annotations

import json
import math
import time

import httpx
import numpy as np
import pandas as pd

from churn_platform.core.environment import parity_problems
from churn_platform.core.model_checks import CheckOutcome
from churn_platform.core.spec import Spec


def records(frame: pd.DataFrame, spec: Spec) -> list[dict[str, object]]:
    """Validated rows as JSON-ready request records holding ``spec``'s model inputs (dates
    as ISO strings, nulls as None)."""
    missing = [c for c in spec.feature_names if c not in frame.columns]
    if missing:
        raise ValueError(
            f"rows lack column(s) {missing} that the served model's spec {spec.name!r} "
            f"({spec.short_hash}) takes; score rows validated with that spec"
        )
    inputs = frame[list(spec.feature_names)].copy()
    for name in spec.of_kind("date"):
        inputs[name] = pd.to_datetime(inputs[name]).dt.strftime("%Y-%m-%d")
    return json.loads(inputs.to_json(orient="records"))


def dropped_column(spec: Spec) -> str:
    """The column the API contract check leaves out of a record: the spec's first numeric
    feature (``monthly_spend`` in the default spec), else its first feature."""
    numeric = spec.of_kind("numeric")
    return numeric[0] if numeric else spec.feature_names[0]


def health_check(url: str, timeout: float = 5.0) -> CheckOutcome:
    """``GET /health`` answers 200 (the model is loaded)."""
    try:
        response = httpx.get(f"{url}/health", timeout=timeout)
        status, body = response.status_code, response.text[:200]
    except httpx.HTTPError as exc:
        status, body = None, f"{type(exc).__name__}: {exc}"
    return CheckOutcome(
        name="health",
        passed=status == 200,
        description=f"GET {url}/health -> {status}",
        metadata={"status": status, "body": body, "url": url},
    )


def environment_parity_check(
    url: str, required: dict[str, str], python: str | None, timeout: float = 5.0
) -> CheckOutcome:
    """The server's Python and packages (its ``/health`` ``environment``) match the model's
    logged pins (``required``) and the Python it was trained on (``python``)."""
    try:
        response = httpx.get(f"{url}/health", timeout=timeout)
        served = response.json().get("environment") or {}
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        served = {}
        problems = [f"GET {url}/health gave no environment: {type(exc).__name__}: {exc}"]
    else:
        problems = parity_problems(required, python, served) if served else []
        if not served:
            problems = [f"GET {url}/health reports no environment (a server of another build?)"]
    return CheckOutcome(
        name="environment_parity",
        passed=not problems,
        description="; ".join(problems)
        or f"server matches the model's {len(required)} pinned package(s) and Python {python}",
        metadata={
            "required": ", ".join(f"{k}=={v}" for k, v in sorted(required.items())),
            "served": ", ".join(
                f"{k}=={v}" for k, v in sorted((served.get("packages") or {}).items())
            ),
            "python": f"model {python}, server {served.get('python')}",
        },
    )


def api_contract_check(
    url: str, frame: pd.DataFrame, timeout: float = 10.0, *, spec: Spec
) -> CheckOutcome:
    """Valid records get one probability each; a record missing a column gets a 4xx naming it."""
    problems: list[str] = []
    dropped = dropped_column(spec)
    try:
        sample = records(frame.head(5), spec)
        ok = httpx.post(f"{url}/predict", json={"records": sample}, timeout=timeout)
        body = ok.json()
        if ok.status_code != 200:
            problems.append(f"valid request answered {ok.status_code}: {ok.text[:200]}")
        elif len(body.get("probabilities", [])) != len(sample):
            problems.append(
                f"expected {len(sample)} probabilities, got {body.get('probabilities')!r}"
            )
        broken = [{k: v for k, v in r.items() if k != dropped} for r in sample[:1]]
        bad = httpx.post(f"{url}/predict", json={"records": broken}, timeout=timeout)
        if not 400 <= bad.status_code < 500:
            problems.append(f"a record without {dropped} answered {bad.status_code}, expected 4xx")
        elif dropped not in bad.text:
            problems.append(f"the 4xx for a missing column does not name it: {bad.text[:200]}")
    except (httpx.HTTPError, ValueError) as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    return CheckOutcome(
        name="api_contract",
        passed=not problems,
        description="request/response contract holds" if not problems else "; ".join(problems),
        metadata={"problems": len(problems), "url": url},
    )


def latency_check(
    url: str,
    frame: pd.DataFrame,
    requests: int = 50,
    p95_bound_ms: float = 250.0,
    *,
    spec: Spec,
) -> CheckOutcome:
    """p95 latency of single-row predictions stays under the bound."""
    try:
        rows = records(frame.head(requests), spec)
    except ValueError as exc:
        return CheckOutcome(
            name="latency",
            passed=False,
            description=f"no requests to time: {exc}",
            metadata={"errors": requests},
        )
    timings: list[float] = []
    errors = 0
    with httpx.Client(timeout=10.0) as client:
        for i in range(requests):
            start = time.perf_counter()
            try:
                if (
                    client.post(
                        f"{url}/predict", json={"records": [rows[i % len(rows)]]}
                    ).status_code
                    != 200
                ):
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            timings.append((time.perf_counter() - start) * 1000.0)
    p50, p95 = (float(np.percentile(timings, q)) for q in (50, 95))
    passed = errors == 0 and p95 <= p95_bound_ms
    return CheckOutcome(
        name="latency",
        passed=passed,
        description=f"p95 {p95:.1f} ms over {requests} single-row requests (bound {p95_bound_ms} ms), {errors} errors",
        metadata={
            "p50_ms": round(p50, 2),
            "p95_ms": round(p95, 2),
            "bound_ms": p95_bound_ms,
            "errors": errors,
        },
    )


def parity_check(
    url: str,
    frame: pd.DataFrame,
    offline: np.ndarray,
    tolerance: float = 1e-9,
    *,
    spec: Spec,
) -> CheckOutcome:
    """Online predictions equal the offline pipeline's for the same rows."""
    try:
        body = {"records": records(frame, spec)}
        response = httpx.post(f"{url}/predict", json=body, timeout=30.0)
        online = np.asarray(response.json()["probabilities"], dtype=float)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return CheckOutcome(
            name="online_offline_parity",
            passed=False,
            description=f"could not score {len(frame)} rows online: {type(exc).__name__}: {exc}",
            metadata={"rows": len(frame)},
        )
    if online.shape != offline.shape:
        diff = math.inf
    else:
        diff = float(np.max(np.abs(online - offline))) if len(online) else 0.0
    passed = diff <= tolerance
    return CheckOutcome(
        name="online_offline_parity",
        passed=passed,
        description=f"max |online - offline| = {diff:.3g} over {len(frame)} rows (tolerance {tolerance})",
        metadata={"rows": len(frame), "max_abs_diff": diff, "tolerance": tolerance},
    )
