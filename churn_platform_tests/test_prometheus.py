"""Against a real Prometheus scraping real model servers: the error-rate query is right
(and the seed's per-series ratio is not), and the canary promotes a healthy version and
rolls back a failing one, end to end through the local router.

Prometheus is ``/usr/bin/prometheus`` with the rendered ``deploy/local/prometheus.yml``
(1 s scrapes, file_sd targets written by ``LocalProcessTarget``), on a free port with
its own storage directory; the test stops it.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from churn_platform.core.canary import (
    UNREACHABLE,
    CanaryConfig,
    CanaryResult,
    CanaryState,
    Collaborators,
    Rollout,
    run_canary,
)
from churn_platform.core.spec import default_spec
from churn_platform.resources.metrics_source import (
    MetricsResource,
    PrometheusMetrics,
    ScrapeMetrics,
    error_count_query,
)
from churn_platform.serving.integration import records
from churn_platform.serving.traffic import TrafficGenerator
from churn_platform.targets.local import LocalProcessTarget
from churn_platform.testing import (
    PacedLoad,
    RegisteredModels,
    RunningPrometheus,
    free_port,
    log_and_register,
    prometheus_installed,
    start_prometheus,
    to_records,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not prometheus_installed(),
        reason="prometheus binary not installed (apt-get install prometheus)",
    ),
]


@dataclass
class Stack:
    target: LocalProcessTarget
    prometheus: RunningPrometheus
    models: RegisteredModels


@pytest.fixture(scope="module")
def stack(
    registered_models: RegisteredModels,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("prometheus-stack")
    target = LocalProcessTarget(
        work / "deployments",
        registered_models.tracking_uri,
        inference_log_dir=work / "inference_log",
    )
    config = target.write_prometheus_config(work / "prometheus.yml", scrape_interval="1s")
    try:
        with start_prometheus(config, work) as prometheus:
            yield Stack(target, prometheus, registered_models)
    finally:
        target.stop_all()


def test_our_query_gives_the_true_error_rate_where_the_seeds_does_not(stack: Stack) -> None:
    target, models = stack.target, stack.models
    env = "qa"
    try:
        served = target.deploy(
            env,
            "1",
            models.model_uris["1"],
            extra_env={"CHURN_FAULT_RATE": "0.2", "CHURN_FAULT_SEED": "3"},
        )
        state = target.set_weights(env, {"1": 100})
        metrics = PrometheusMetrics(stack.prometheus.url, label_filters={"environment": env})
        assert metrics.wait_until_scraped("1")
        scrape = ScrapeMetrics({"1": served.url})
        assert scrape.error_rate("1", 8).error_rate is None  # first scrape: no baseline yet
        with PacedLoad(state.endpoint, to_records(models.rows.head(1)), rate=40) as load:
            time.sleep(10)
            ours = metrics.error_rate("1", 8)
            direct = scrape.error_rate("1", 8)
        statuses = [s for _, s, _ in load.results]
        assert set(statuses) == {200, 500}
        true_rate = statuses.count(500) / len(statuses)

        assert ours.error_rate is not None, ours.reason
        assert abs(ours.error_rate - true_rate) < 0.08, (ours, true_rate)
        assert ours.request_count > 100
        assert direct.error_rate is not None and abs(direct.error_rate - true_rate) < 0.08

        # the seed's query divides each 5xx series by itself: 1 (or NaN), never the rate
        seed = 'rate(http_requests_total{status=~"5.."}[8s]) / rate(http_requests_total[8s])'
        values = [float(r["value"][1]) for r in metrics._client.custom_query(seed)]
        assert values, "the seed's query answered nothing at all"
        assert all(math.isnan(v) or v == 1.0 for v in values), values
        assert all(math.isnan(v) or abs(v - true_rate) > 0.5 for v in values)
    finally:
        target.stop_all(env)


def test_the_4xx_share_per_version_is_read_from_prometheus(stack: Stack) -> None:
    """Issue 25: the canary compares 4xx shares, so the reading carries the version's; a
    client's bad dates (422) are counted as requests, never as the server's errors."""
    target, models = stack.target, stack.models
    env = "qa-4xx"
    try:
        served = target.deploy(env, "1", models.model_uris["1"])
        state = target.set_weights(env, {"1": 100})
        metrics = PrometheusMetrics(stack.prometheus.url, label_filters={"environment": env})
        assert metrics.wait_until_scraped("1")
        scrape = ScrapeMetrics({"1": served.url})
        scrape.error_rate("1", 8)  # the base scrape
        good = to_records(models.rows.head(3))
        mixed = [*good, {**good[0], "signup_date": "9999-12-31"}]  # one in four refused
        deadline = time.monotonic() + 120
        with PacedLoad(state.endpoint, mixed, rate=40, one_by_one=True) as load:
            ours = metrics.error_rate("1", 8)
            while ours.request_count < 150 and time.monotonic() < deadline:
                time.sleep(0.5)  # until Prometheus holds 150 requests in the window
                ours = metrics.error_rate("1", 8)
            direct = scrape.error_rate("1", 60)
        statuses = [st for _, st, _ in load.results]
        assert set(statuses) == {200, 422}, set(statuses)
        assert ours.request_count >= 150 and ours.error_rate == 0.0, ours
        assert ours.client_error_rate is not None
        assert abs(ours.client_error_rate - 0.25) < 0.08, ours
        assert 'status=~"4..", status!="499"' in ours.query
        assert direct.error_rate == 0.0 and direct.client_error_rate is not None
        assert abs(direct.client_error_rate - 0.25) < 0.08, direct
    finally:
        target.stop_all(env)


def test_unreachable_and_empty_prometheus_readings_say_why(stack: Stack) -> None:
    down = PrometheusMetrics(f"http://127.0.0.1:{free_port()}").error_rate("1", 5)
    assert down.error_rate is None and down.reason.startswith(UNREACHABLE)
    empty = PrometheusMetrics(stack.prometheus.url).error_rate("no-such-version", 5)
    assert empty.error_rate is None and "no data from Prometheus" in empty.reason
    assert error_count_query("4", 5).startswith('sum(increase(http_requests_total{status=~"5..",')
    assert 'router_requests_total{backend="4", status="502"}' in error_count_query("4", 5)
    resource = MetricsResource(prometheus_url=stack.prometheus.url)
    assert isinstance(resource.source(), PrometheusMetrics)
    assert isinstance(MetricsResource().source({"1": "http://x"}), ScrapeMetrics)
    with pytest.raises(ValueError, match="prometheus_url"):
        MetricsResource().source()


def test_canary_promotes_a_healthy_version_and_rolls_back_a_failing_one(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    target, models = stack.target, stack.models
    env = "production"
    metrics = PrometheusMetrics(stack.prometheus.url, label_filters={"environment": env})
    # the default sequential analysis; the step time is only a bound, the counts decide.
    # No shadow step: this test is about the canary's own steps (test_shadow.py and
    # the rollback benchmark run the shadow against real servers and Prometheus)
    config = CanaryConfig(
        steps=(10, 50, 100), analysis_window_seconds=120, interval_seconds=1, shadow=False
    )
    faulty_version = log_and_register(models.pipelines["2"], models.rows, models.tracking_uri)
    try:
        target.deploy(env, "1", models.model_uris["1"])
        state = target.set_weights(env, {"1": 100})
        target.deploy(env, "2", models.model_uris["2"])
        assert metrics.wait_until_scraped("2")
        record = to_records(models.rows.head(1))

        with PacedLoad(state.endpoint, record, rate=40) as load:
            healthy = run_canary(Collaborators(target, metrics), Rollout(env, "2", "1"), config)
        assert healthy.status is CanaryState.SUCCEEDED, healthy.as_markdown()
        assert target.state(env).weights() == {"1": 0, "2": 100}
        assert {s for _, s, _ in load.results} == {200}
        passed = [t for t in healthy.transitions if "passed" in t.reason]
        assert [t.reading.error_rate for t in passed] == [0.0, 0.0, 0.0]
        assert all(t.reading.latency_p95_seconds is not None for t in passed)

        target.deploy(
            env,
            faulty_version,
            f"models:/churn_model/{faulty_version}",
            extra_env={"CHURN_FAULT_RATE": "0.2", "CHURN_FAULT_SEED": "1"},  # 20% 5xx
        )
        assert metrics.wait_until_scraped(faulty_version)
        with PacedLoad(state.endpoint, record, rate=40) as load:
            bad = run_canary(
                Collaborators(target, metrics), Rollout(env, faulty_version, "2"), config
            )
            time.sleep(1.5)  # traffic after the rollback must be clean
        assert bad.status is CanaryState.ROLLED_BACK, bad.as_markdown()
        assert target.state(env).weights() == {"1": 0, "2": 100, faulty_version: 0}
        breach = bad.breach
        assert breach is not None and breach.reading is not None
        assert breach.reading.error_rate > 0.05 and breach.step == 10
        onset = next(t.at for t in bad.transitions if t.to_state is CanaryState.PROGRESSING)
        last_error = max(t for t, s, _ in load.results if s != 200)
        assert last_error <= breach.at + 0.5  # in flight at most
        assert all(s == 200 for t, s, _ in load.results if t > breach.at + 0.5)
        with capsys.disabled():
            print(
                f"\n[canary] healthy rollout {healthy.transitions[-1].at - healthy.transitions[0].at:.1f}s;"
                f" faulty: breach onset -> weights back on baseline {breach.at - onset:.2f}s"
                f" (decision -> weights restored {bad.rollback_seconds:.3f}s),"
                f" last 5xx seen by clients {last_error - onset:.2f}s after onset,"
                f" reading {breach.reading.error_rate:.2f} over {breach.reading.request_count:.0f} requests"
            )
        target.retire(env, faulty_version)
    finally:
        target.stop_all(env)


def test_canary_without_data_does_not_promote(stack: Stack) -> None:
    """No traffic at all: Prometheus has series but no requests; the canary must abort."""
    target, models = stack.target, stack.models
    env = "quiet"
    metrics = PrometheusMetrics(stack.prometheus.url, label_filters={"environment": env})
    config = CanaryConfig(
        steps=(50, 100),
        analysis_window_seconds=3,
        interval_seconds=1,
        max_unreachable_readings=None,
    )
    try:
        target.deploy(env, "1", models.model_uris["1"])
        target.set_weights(env, {"1": 100})
        target.deploy(env, "2", models.model_uris["2"])
        result = run_canary(Collaborators(target, metrics), Rollout(env, "2", "1"), config)
        assert result.status is CanaryState.ABORTED
        assert "no data from Prometheus" in result.reason
        assert target.state(env).weights() == {"1": 100, "2": 0}
    finally:
        target.stop_all(env)


def scrape_metrics(target: LocalProcessTarget, env: str) -> ScrapeMetrics:
    """The local default's metrics source: the servers' and the router's own /metrics."""
    return ScrapeMetrics(
        lambda: {v.version: v.url for v in target.state(env).versions},
        router_url=lambda: target.state(env).endpoint,
    )


def test_default_canary_releases_a_healthy_version_at_the_local_traffic(stack: Stack) -> None:
    # issue 13.2: 25 req/s at the 5% step is ~1.25 canary req/s; the old defaults aborted
    # with "only 16 requests, need 20". The default analysis decides on the counts.
    target, models = stack.target, stack.models
    env = "defaults"
    try:
        target.deploy(env, "1", models.model_uris["1"])
        state = target.set_weights(env, {"1": 100})
        target.deploy(env, "2", models.model_uris["2"])
        assert state.endpoint is not None
        with TrafficGenerator(
            state.endpoint, records(models.rows.head(50), default_spec()), rate=25.0
        ):
            result = run_canary(
                Collaborators(target, scrape_metrics(target, env)),
                Rollout(env, "2", "1"),
                CanaryConfig(),
            )
        assert result.status is CanaryState.SUCCEEDED, result.as_markdown()
        assert target.state(env).weights() == {"1": 0, "2": 100}
    finally:
        target.stop_all(env)


def test_a_canary_process_that_dies_is_rolled_back_within_seconds(stack: Stack) -> None:
    # issue 13.4: a dead canary used to read "unreachable" until the window ended
    target, models = stack.target, stack.models
    env = "dying"
    analysing = threading.Event()
    try:
        target.deploy(env, "1", models.model_uris["1"])
        state = target.set_weights(env, {"1": 100})
        target.deploy(env, "2", models.model_uris["2"])
        pid = target.status()[env]["versions"]["2"]["pid"]
        out: dict[str, object] = {}

        def rollout() -> None:
            out["result"] = run_canary(
                Collaborators(target, scrape_metrics(target, env)),
                Rollout(env, "2", "1"),
                CanaryConfig(steps=(50, 100)),
                on_transition=lambda t: (
                    analysing.set() if t.to_state is CanaryState.ANALYSING else None
                ),
            )

        with PacedLoad(state.endpoint, to_records(models.rows.head(1)), rate=20):
            runner = threading.Thread(target=rollout)
            runner.start()
            assert analysing.wait(60)
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            runner.join(120)
        result = out["result"]
        assert isinstance(result, CanaryResult)
        assert result.status is CanaryState.ROLLED_BACK, result.as_markdown()
        assert "server is not running" in result.reason
        breach = result.breach
        assert breach is not None and breach.at - killed < 10.0
        assert target.state(env).weights() == {"1": 100}
    finally:
        target.stop_all(env)
