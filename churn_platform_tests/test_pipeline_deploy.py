"""The whole graph on the local default: real model-server processes, the weighted router,
staging integration checks and the production canary, first a rollout, then a rollback."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import httpx
import pytest

from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.serving.integration import records
from churn_platform.targets.local import LocalProcessTarget
from churn_platform_tests.pipeline import (
    FAST_GATE,
    FAST_MODEL,
    THROUGH_STAGING,
    WEAK_MODEL,
    checks,
    materialize,
    registry,
    release_graph,
    step_error,
)
from churn_platform_tests.postgres import free_port

# the sequential analysis decides each step on the request counts; the step time is only
# an upper bound, so a loaded machine makes the test slower, not wrong
CANARY = {
    "steps": [5, 25, 100],
    "analysis_window_seconds": 120.0,
    "interval_seconds": 0.5,
    "synthetic_traffic_rps": 60.0,
}


def production_state(home: Path):
    return LocalProcessTarget(home / "deployments").state("production")


def test_first_release_then_a_faulty_canary_rolls_back_to_the_running_champion(
    local_platform: Path, monkeypatch: pytest.MonkeyPatch
):
    instance = dg.DagsterInstance.ephemeral()
    first = release_graph(instance, WEAK_MODEL, CANARY)
    found = checks(first)
    assert all(
        found[("staging_deployment", n)].passed
        for n in ("health", "environment_parity", "api_contract", "latency")
    )
    parity = found[("staging_deployment", "online_offline_parity")]
    assert parity.passed and parity.metadata["max_abs_diff"].value <= 1e-9
    reg = registry()
    assert reg.alias_version("champion") == "1" and reg.alias_version("previous") is None
    state = production_state(local_platform)
    assert state.weights() == {"1": 100}
    # the deployment outlives the run that made it: the endpoint still answers
    rows = records(generate(SyntheticSpec(n_rows=3, seed=1)), default_spec())
    answer = httpx.post(f"{state.endpoint}/predict", json={"records": rows}, timeout=10)
    assert answer.status_code == 200 and len(answer.json()["probabilities"]) == 3

    # approving the same release twice is a no-op, not a failure
    again = materialize(
        ["production_deployment"], instance, {"production_deployment": {"config": CANARY}}
    )
    assert again.success, step_error(again)
    assert again.output_for_node("production_deployment").action == "none"
    assert production_state(local_platform).weights() == {"1": 100}

    second = materialize(
        THROUGH_STAGING,
        instance,
        {"challenger_model": {"config": FAST_MODEL}, "evaluation_report": {"config": FAST_GATE}},
    )
    assert second.success, step_error(second)
    assert second.output_for_node("staging_deployment").candidate == "2"
    staging = LocalProcessTarget(local_platform / "deployments").state("staging")
    assert staging.weights() == {"1": 100, "2": 0}  # the challenger at 0% beside the champion

    # v2 passed staging; in production it now answers 60% of requests with a 500
    monkeypatch.setenv("CHURN_FAULT_RATE", "0.6")
    release = materialize(
        ["production_deployment"], instance, {"production_deployment": {"config": CANARY}}
    )
    assert release.success, step_error(release)  # a rollback is an outcome, not a crash
    analysis = checks(release)[("production_deployment", "canary_analysis")]
    assert not analysis.passed
    # issue 13.3: under load the count rule saw "2 of 2 failed" and aborted instead
    assert analysis.metadata["outcome"].value == "rolled_back", analysis.metadata["reason"].value
    # stopped in the shadow step: the failing candidate never answered a client
    assert "shadow failed" in analysis.metadata["reason"].value
    assert "no client request reached" in analysis.metadata["reason"].value
    assert "shows a rate above the bound" in analysis.metadata["reason"].value
    assert reg.alias_version("champion") == "1"  # aliases unchanged
    assert reg.alias_version("previous") is None
    after = production_state(local_platform)
    assert after.weights() == {"1": 100}  # the N-1 champion never stopped; the canary is retired
    ok = httpx.post(f"{after.endpoint}/predict", json={"records": rows}, timeout=10)
    assert ok.status_code == 200

    # Prometheus unreachable: the canary does not promote, and says why
    monkeypatch.setenv("CHURN_FAULT_RATE", "0")
    monkeypatch.setenv("PROMETHEUS_URL", f"http://127.0.0.1:{free_port()}")
    blind = materialize(
        ["production_deployment"], instance, {"production_deployment": {"config": CANARY}}
    )
    assert blind.success, step_error(blind)
    analysis = checks(blind)[("production_deployment", "canary_analysis")]
    assert not analysis.passed and analysis.metadata["outcome"].value == "aborted"
    assert "unreachable" in analysis.metadata["reason"].value
    assert reg.alias_version("champion") == "1"
    assert production_state(local_platform).weights() == {"1": 100}
