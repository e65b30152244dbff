"""The canary state machine, driven with an in-memory target and scripted metrics.

The integration run (real model servers, real Prometheus) lives in
``test_prometheus.py``; here the logic is checked step by step with a fake clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from churn_platform.core.canary import (
    UNREACHABLE,
    CanaryConfig,
    CanaryState,
    Collaborators,
    Rollout,
    Sprt,
    Transition,
    Verdict,
    release_line,
    run_canary,
)
from churn_platform.core.rollout import (
    DeploymentTarget,
    EnvironmentState,
    ErrorRate,
    MetricsSource,
    ServedVersion,
)


class FakeClock:
    """A clock that only moves when the controller sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


class MemoryTarget:
    """Keeps weights in a dict and logs every call, like a router would."""

    def __init__(self, versions: list[str], clock: FakeClock) -> None:
        self.weights = {v: 0 for v in versions}
        self.calls: list[tuple[float, dict[str, int]]] = []
        self.clock = clock
        self.fail_on: set[int] = set()  # candidate steps whose set_weights raises

    def deploy(self, environment: str, version: str, model_uri: str) -> ServedVersion:
        self.weights[version] = 0
        return ServedVersion(version, model_uri, f"http://x/{version}", 0)

    def set_weights(self, environment: str, weights: dict[str, int]) -> EnvironmentState:
        if weights.get("2") in self.fail_on:
            raise RuntimeError("router unreachable")
        assert sum(weights.values()) == 100
        self.weights = {v: weights.get(v, 0) for v in self.weights}
        self.calls.append((self.clock(), dict(weights)))
        return self.state(environment)

    def state(self, environment: str) -> EnvironmentState:
        return EnvironmentState(
            environment,
            "http://router",
            tuple(
                ServedVersion(v, f"models:/m/{v}", f"http://x/{v}", w)
                for v, w in self.weights.items()
            ),
        )

    def retire(self, environment: str, version: str) -> None:
        del self.weights[version]


class ScriptedMetrics:
    """Answers from a function of (reading number, current candidate weight)."""

    def __init__(
        self, target: MemoryTarget, answer: Callable[[int, int], ErrorRate | Exception]
    ) -> None:
        self.target = target
        self.answer = answer
        self.readings = 0

    def error_rate(self, version: str, window_seconds: float) -> ErrorRate:
        self.readings += 1
        out = self.answer(self.readings, self.target.weights[version])
        if isinstance(out, Exception):
            raise out
        return out


def rate(value: float | None, count: float, reason: str = "") -> ErrorRate:
    return ErrorRate("2", value, count, "scripted", reason)


# the earlier fixed-window count rule, kept as analysis="count"
CONFIG = CanaryConfig(
    steps=(5, 25, 100),
    analysis_window_seconds=10,
    interval_seconds=1,
    analysis="count",
    min_requests=20,
    max_unreachable_readings=None,
)


def setup(answer: Callable[[int, int], ErrorRate | Exception]):
    clock = FakeClock()
    target = MemoryTarget(["1", "2"], clock)
    target.weights = {"1": 100, "2": 0}
    metrics = ScriptedMetrics(target, answer)
    return clock, target, metrics


def test_fakes_satisfy_the_protocols() -> None:
    clock, target, metrics = setup(lambda n, w: rate(0.0, 100))
    assert isinstance(target, DeploymentTarget)
    assert isinstance(metrics, MetricsSource)


def test_healthy_candidate_is_promoted_through_every_step() -> None:
    clock, target, metrics = setup(lambda n, w: rate(0.01, 100))
    seen: list[Transition] = []
    result = run_canary(
        Collaborators(target, metrics, sleep=clock.sleep, clock=clock),
        Rollout("production", "2", "1"),
        CONFIG,
        on_transition=seen.append,
    )
    assert result.status is CanaryState.SUCCEEDED and result.promoted
    assert result.final_weights == {"2": 100, "1": 0}
    assert target.weights == {"1": 0, "2": 100}
    assert [w for _, w in target.calls] == [
        {"2": 5, "1": 95},
        {"2": 25, "1": 75},
        {"2": 100, "1": 0},
    ]
    # each step is observed for the whole window: 3 windows of 10 s
    assert clock.now - 1000.0 == pytest.approx(30.0)
    # reading at t=0 and after each of 10 one-second sleeps, per step
    assert metrics.readings == 33
    assert seen == result.transitions
    states = [t.to_state for t in result.transitions]
    assert states == [
        CanaryState.PROGRESSING,
        CanaryState.ANALYSING,
        CanaryState.PROGRESSING,
        CanaryState.PROGRESSING,
        CanaryState.ANALYSING,
        CanaryState.PROGRESSING,
        CanaryState.PROGRESSING,
        CanaryState.ANALYSING,
        CanaryState.PROMOTING,
        CanaryState.SUCCEEDED,
    ]
    passed = [t for t in result.transitions if t.reason.startswith("step ") and t.reading]
    assert len(passed) == 3 and all(t.reading.error_rate == 0.01 for t in passed)
    assert result.rollback_seconds is None
    assert "| progressing | analysing |" in result.as_markdown()
    assert result.as_dict()["status"] == "succeeded"


def test_breach_rolls_back_immediately_and_records_the_reading() -> None:
    # healthy at 5%, breaks on the 3rd reading at 25%
    def answer(n: int, weight: int) -> ErrorRate:
        if weight == 25 and n >= 14:
            return rate(0.4, 50)
        return rate(0.0, 50)

    clock, target, metrics = setup(answer)
    result = run_canary(
        Collaborators(target, metrics, sleep=clock.sleep, clock=clock),
        Rollout("production", "2", "1"),
        CONFIG,
    )
    assert result.status is CanaryState.ROLLED_BACK
    assert target.weights == {"1": 100, "2": 0}
    assert result.final_weights == {"2": 0, "1": 100}
    breach = result.breach
    assert breach is not None
    assert breach.reading is not None and breach.reading.error_rate == 0.4
    assert breach.from_state is CanaryState.ANALYSING and breach.step == 25
    assert "breach at step 25%" in breach.reason and "40.00%" in breach.reason
    # rolled back at the breaching reading, not at the end of the window
    assert clock.now - 1000.0 == pytest.approx(10.0 + 2.0)
    assert result.rollback_seconds == pytest.approx(0.0)
    assert target.calls[-1][1] == {"2": 0, "1": 100}


def test_a_single_early_error_is_not_a_breach() -> None:
    # 1 error in 2 requests is 50%, but rests on too few requests to judge
    clock, target, metrics = setup(lambda n, w: rate(0.5, 2) if n == 1 else rate(0.0, 100))
    result = run_canary(
        Collaborators(target, metrics, sleep=clock.sleep, clock=clock),
        Rollout("production", "2", "1"),
        CONFIG,
    )
    assert result.status is CanaryState.SUCCEEDED


def test_no_data_at_window_end_aborts_without_promoting() -> None:
    clock, target, metrics = setup(
        lambda n, w: rate(None, 0, "no data from Prometheus for version 2")
    )
    result = run_canary(
        Collaborators(target, metrics, sleep=clock.sleep, clock=clock),
        Rollout("production", "2", "1"),
        CONFIG,
    )
    assert result.status is CanaryState.ABORTED and not result.promoted
    assert target.weights == {"1": 100, "2": 0}
    assert "no data from Prometheus" in result.reason
    assert result.transitions[-1].reading is not None
    assert clock.now - 1000.0 == pytest.approx(10.0)  # waited the full first window


def test_too_few_requests_aborts_with_the_counts() -> None:
    clock, target, metrics = setup(lambda n, w: rate(0.0, 3))
    result = run_canary(
        Collaborators(target, metrics, sleep=clock.sleep, clock=clock),
        Rollout("production", "2", "1"),
        CONFIG,
    )
    assert result.status is CanaryState.ABORTED
    assert "only 3 requests, need 20" in result.reason
    assert target.weights == {"1": 100, "2": 0}


def test_unreachable_metrics_source_aborts_with_the_reason() -> None:
    clock, target, metrics = setup(lambda n, w: ConnectionError("connection refused :9090"))
    result = run_canary(
        Collaborators(target, metrics, sleep=clock.sleep, clock=clock),
        Rollout("production", "2", "1"),
        CONFIG,
    )
    assert result.status is CanaryState.ABORTED
    assert UNREACHABLE in result.reason and "connection refused" in result.reason
    assert target.weights == {"1": 100, "2": 0}


def test_unreachable_readings_can_abort_early() -> None:
    config = CanaryConfig(
        analysis_window_seconds=10,
        interval_seconds=1,
        max_unreachable_readings=3,
        analysis="count",
    )
    clock, target, metrics = setup(lambda n, w: ConnectionError("refused"))
    result = run_canary(
        Collaborators(target, metrics, sleep=clock.sleep, clock=clock),
        Rollout("production", "2", "1"),
        config,
    )
    assert result.status is CanaryState.ABORTED
    assert "3 readings in a row failed" in result.reason
    assert clock.now - 1000.0 == pytest.approx(2.0)


def test_recovered_metrics_source_still_promotes() -> None:
    # an outage early in the window does not matter when the final reading is good
    def answer(n: int, w: int) -> ErrorRate | Exception:
        return ConnectionError("blip") if n in (1, 2) else rate(0.0, 100)

    clock, target, metrics = setup(answer)
    result = run_canary(
        Collaborators(target, metrics, sleep=clock.sleep, clock=clock),
        Rollout("production", "2", "1"),
        CONFIG,
    )
    assert result.status is CanaryState.SUCCEEDED


def test_failure_to_set_step_weights_aborts_back_to_baseline() -> None:
    clock, target, metrics = setup(lambda n, w: rate(0.0, 100))
    target.fail_on = {25}
    result = run_canary(
        Collaborators(target, metrics, sleep=clock.sleep, clock=clock),
        Rollout("production", "2", "1"),
        CONFIG,
    )
    assert result.status is CanaryState.ABORTED
    assert "could not set weights" in result.reason and "router unreachable" in result.reason
    assert target.weights == {"1": 100, "2": 0}


def test_first_deployment_goes_to_100_after_health_check() -> None:
    clock = FakeClock()
    target = MemoryTarget(["1"], clock)
    metrics = ScriptedMetrics(target, lambda n, w: rate(None, 0))
    result = run_canary(
        Collaborators(target, metrics, sleep=clock.sleep, clock=clock),
        Rollout("production", "1", None),
        CONFIG,
    )
    assert result.status is CanaryState.SUCCEEDED
    assert target.weights == {"1": 100}
    assert metrics.readings == 0
    assert "first deployment" in result.transitions[0].reason


def test_first_deployment_with_failing_health_check_keeps_traffic() -> None:
    clock = FakeClock()
    target = MemoryTarget(["1"], clock)
    metrics = ScriptedMetrics(target, lambda n, w: rate(None, 0))
    result = run_canary(
        Collaborators(target, metrics, sleep=clock.sleep, clock=clock),
        Rollout("production", "1", None),
        CONFIG,
        health_check=lambda served: False,
    )
    assert result.status is CanaryState.ABORTED
    assert target.calls == []


def test_caller_mistakes_raise_with_what_to_do() -> None:
    clock, target, metrics = setup(lambda n, w: rate(0.0, 100))
    with pytest.raises(ValueError, match="call target.deploy"):
        run_canary(
            Collaborators(target, metrics, sleep=clock.sleep, clock=clock),
            Rollout("production", "9", "1"),
            CONFIG,
        )
    with pytest.raises(ValueError, match="baseline=None"):
        run_canary(
            Collaborators(target, metrics, sleep=clock.sleep, clock=clock),
            Rollout("production", "2", "2"),
            CONFIG,
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": ()}, "empty"),
        ({"steps": (5, 5, 100)}, "strictly increasing"),
        ({"steps": (5, 50)}, "end at 100"),
        ({"steps": (0, 100)}, "1..100"),
        ({"steps": (5.5, 100)}, "whole percents"),
        ({"analysis_window_seconds": 0}, "analysis_window_seconds"),
        ({"interval_seconds": 200}, "must not exceed"),
        ({"analysis": "vibes"}, "analysis must be one of"),
        ({"max_error_rate": 0.0}, "sequential test"),
        ({"false_rollback_rate": 0.0}, "false_rollback_rate"),
        ({"sprt_ratio": 1.0}, "sprt_ratio"),
        ({"max_error_rate": 5}, r"\[0, 1\]"),
        ({"min_requests": -1}, "min_requests"),
        ({"max_unreachable_readings": 0}, "max_unreachable_readings"),
        ({"max_client_error_increase": -0.1}, "max_client_error_increase"),
        ({"client_error_min_requests": -1}, "client_error_min_requests"),
    ],
)
def test_config_is_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CanaryConfig(**kwargs)


# ---------------------------------------------------------------------------------------
# the sequential analysis (the default)


class TrafficMetrics:
    """Counts from steady traffic: ``rps`` through the router, split by the weights; a
    version fails every request whose running index hits its error pattern.

    ``fails(version, i)`` says whether the i-th request a version served in the current
    step failed; a reading over the look-back counts the requests served since then.
    """

    def __init__(
        self,
        target: MemoryTarget,
        clock: FakeClock,
        rps: float,
        fails: Callable[[str, int], bool],
        latency: dict[str, float] | None = None,
    ) -> None:
        self.target, self.clock, self.rps, self.fails = target, clock, rps, fails
        self.latency = latency or {}
        self.readings: list[tuple[str, float]] = []

    def error_rate(self, version: str, window_seconds: float) -> ErrorRate:
        self.readings.append((version, window_seconds))
        n = int(self.rps * self.target.weights.get(version, 0) / 100 * window_seconds)
        if n == 0:
            return ErrorRate(version, None, 0.0, "traffic", "no requests yet")
        errors = sum(self.fails(version, i) for i in range(n))
        return ErrorRate(
            version, errors / n, float(n), "traffic", "", self.latency.get(version, 0.02)
        )


def run_default(metrics_for, config: CanaryConfig | None = None, **target_kwargs):
    clock = FakeClock()
    target = MemoryTarget(["1", "2"], clock)
    target.weights = {"1": 100, "2": 0}
    metrics = metrics_for(target, clock)
    result = run_canary(
        Collaborators(target, metrics, sleep=clock.sleep, clock=clock),
        Rollout("production", "2", "1"),
        config or CanaryConfig(),
    )
    return result, target, clock


def test_healthy_canary_is_released_at_the_local_default_traffic() -> None:
    # issue 13.2: 25 req/s at 5% is 1.25 canary req/s; with 1% background errors the old
    # defaults aborted ("only 16 requests, need 20"); the default analysis releases it
    result, target, clock = run_default(
        lambda t, c: TrafficMetrics(t, c, 25.0, lambda v, i: i % 100 == 99)
    )
    assert result.status is CanaryState.SUCCEEDED, result.reason
    assert target.weights == {"1": 0, "2": 100}
    passed = [t for t in result.transitions if "passed" in t.reason]
    assert len(passed) == 3 and all("below the bound 5.00%" in t.reason for t in passed)
    # every reading is a row of the transitions table, with both versions' counts
    readings = [t for t in result.transitions if t.reason.startswith("reading at step")]
    assert len(readings) >= 3 and all(t.baseline_reading is not None for t in readings)
    assert "| candidate errors | baseline errors | LLR |" in result.as_markdown()
    assert result.summary().startswith("canary of version 2: released")


def test_strong_evidence_rolls_back_without_a_count_threshold() -> None:
    # issue 13.3: a 60%-failing canary; the count rule saw 2 of 2 fail and aborted
    result, target, clock = run_default(
        lambda t, c: TrafficMetrics(t, c, 25.0, lambda v, i: v == "2" and i % 5 < 3)
    )
    assert result.status is CanaryState.ROLLED_BACK, result.reason
    assert target.weights == {"1": 100, "2": 0}
    breach = result.breach
    assert breach is not None and breach.step == 5
    assert breach.reading is not None and breach.reading.request_count <= 12
    assert "shows a rate above the bound 5.00%" in breach.reason
    assert result.summary().startswith("canary of version 2: rolled back - breach at step 5%")


def test_one_failure_in_six_requests_is_not_a_rollback() -> None:
    # issue 13.3: the count rule rolled back on 1 failure in 6 requests
    result, _, _ = run_default(lambda t, c: TrafficMetrics(t, c, 25.0, lambda v, i: i == 0))
    assert result.status is CanaryState.SUCCEEDED, result.reason
    old = CanaryConfig(analysis="count", analysis_window_seconds=15, min_requests=5)
    result, _, _ = run_default(lambda t, c: TrafficMetrics(t, c, 25.0, lambda v, i: i == 0), old)
    assert result.status is CanaryState.ROLLED_BACK  # the earlier rule, for contrast


def test_baseline_failing_as_much_aborts_without_blaming_the_candidate() -> None:
    # a shared dependency is down: both versions fail 30% of their requests
    result, target, _ = run_default(
        lambda t, c: TrafficMetrics(t, c, 25.0, lambda v, i: i % 10 < 3)
    )
    assert result.status is CanaryState.ABORTED, result.reason
    assert result.breach is None
    assert "the baseline fails as much" in result.reason
    assert target.weights == {"1": 100, "2": 0}


def test_a_dead_candidate_is_a_breach_at_the_next_reading() -> None:
    clock = FakeClock()
    target = MemoryTarget(["1", "2"], clock)
    target.weights = {"1": 100, "2": 0}
    metrics = TrafficMetrics(target, clock, 25.0, lambda v, i: False)
    died_at = 1003.0
    real_state = target.state

    def state(environment: str) -> EnvironmentState:
        s = real_state(environment)
        if clock.now >= died_at:  # the process is gone: the target no longer lists it
            return EnvironmentState(
                s.environment, s.endpoint, tuple(v for v in s.versions if v.version != "2")
            )
        return s

    target.state = state  # type: ignore[method-assign]
    result = run_canary(
        Collaborators(target, metrics, sleep=clock.sleep, clock=clock),
        Rollout("production", "2", "1"),
        CanaryConfig(),
    )
    assert result.status is CanaryState.ROLLED_BACK
    assert "server is not running" in result.reason
    assert clock.now - died_at <= 1.0  # acted on within one reading interval
    assert target.weights == {"1": 100, "2": 0}


def test_slow_candidate_is_rolled_back_on_latency() -> None:
    result, _, _ = run_default(
        lambda t, c: TrafficMetrics(t, c, 25.0, lambda v, i: False, {"1": 0.02, "2": 0.4})
    )
    assert result.status is CanaryState.ROLLED_BACK
    assert "p95 latency 400 ms > 140 ms" in result.reason


def test_undecided_step_aborts_with_the_counts_when_time_runs_out() -> None:
    config = CanaryConfig(analysis_window_seconds=5)
    result, _, clock = run_default(
        lambda t, c: TrafficMetrics(t, c, 25.0, lambda v, i: False), config
    )
    assert result.status is CanaryState.ABORTED
    assert "undecided after 5s" in result.reason and "error-free requests" in result.reason
    assert clock.now - 1000.0 == pytest.approx(5.0)


def test_sprt_boundaries() -> None:
    test = Sprt.from_config(CanaryConfig())
    assert (test.p0, test.p1) == (0.025, 0.1)
    assert test.verdict(test.requests_to_pass(), 0) is Verdict.HEALTHY
    assert test.verdict(test.requests_to_pass() - 1, 0) is Verdict.UNDECIDED
    assert test.verdict(6, 5) is Verdict.BAD
    assert test.verdict(2, 2) is Verdict.UNDECIDED


def test_sequential_step_without_data_aborts_with_the_sources_reason() -> None:
    clock, target, metrics = setup(lambda n, w: rate(None, 0, "no data yet: first scrape"))
    config = CanaryConfig(analysis_window_seconds=4)
    result = run_canary(
        Collaborators(target, metrics, sleep=clock.sleep, clock=clock),
        Rollout("production", "2", "1"),
        config,
    )
    assert result.status is CanaryState.ABORTED
    assert "no data yet: first scrape" in result.reason
    assert "| n/a of 0 |" in result.as_markdown()


def test_a_dead_router_is_a_breach() -> None:
    clock = FakeClock()
    target = MemoryTarget(["1", "2"], clock)
    target.weights = {"1": 100, "2": 0}
    metrics = TrafficMetrics(target, clock, 25.0, lambda v, i: False)
    real_state = target.state
    died_at = 1002.0

    def state(environment: str) -> EnvironmentState:
        s = real_state(environment)
        return EnvironmentState(
            environment, None if clock.now >= died_at else s.endpoint, s.versions
        )

    target.state = state  # type: ignore[method-assign]
    result = run_canary(
        Collaborators(target, metrics, sleep=clock.sleep, clock=clock),
        Rollout("production", "2", "1"),
        CanaryConfig(),
    )
    assert result.status is CanaryState.ROLLED_BACK
    assert "router is not running" in result.reason
    assert clock.now == died_at  # at the first reading after it died


def test_release_line_says_rolled_back_or_aborted_with_the_reason() -> None:
    line = release_line({"action": "rolled_back", "candidate": "2", "reason": "breach at step 5%"})
    assert line == "release v2: ROLLED BACK - breach at step 5%"
    assert release_line({"action": "aborted", "candidate": "3", "reason": "undecided"}).startswith(
        "release v3: ABORTED - undecided"
    )
    assert release_line({"action": "promoted", "candidate": "2"}) == "release v2: released"
    assert release_line({"action": "none", "reason": "the gate kept the champion"}) == (
        "release: nothing released - the gate kept the champion"
    )


def test_a_target_without_an_endpoint_is_not_judged_on_it() -> None:
    # e.g. the Kubernetes target without a configured endpoint: no router to watch
    clock = FakeClock()
    target = MemoryTarget(["1", "2"], clock)
    target.weights = {"1": 100, "2": 0}
    metrics = TrafficMetrics(target, clock, 25.0, lambda v, i: False)
    real_state = target.state
    target.state = lambda env: EnvironmentState(env, None, real_state(env).versions)  # type: ignore[method-assign]
    result = run_canary(
        Collaborators(target, metrics, sleep=clock.sleep, clock=clock),
        Rollout("production", "2", "1"),
        CanaryConfig(),
    )
    assert result.status is CanaryState.SUCCEEDED, result.reason


class RefusingMetrics(TrafficMetrics):
    """``TrafficMetrics`` whose readings carry a 4xx share per version (``refused``)."""

    def __init__(self, target, clock, refused: dict[str, float]) -> None:
        super().__init__(target, clock, 25.0, lambda v, i: False)
        self.refused = refused

    def error_rate(self, version: str, window_seconds: float) -> ErrorRate:
        reading = super().error_rate(version, window_seconds)
        if reading.error_rate is None:
            return reading
        return dataclasses.replace(reading, client_error_rate=self.refused.get(version, 0.0))


def test_a_candidate_refusing_what_the_baseline_scores_is_not_promoted() -> None:
    """Issue 25: a 4xx never counts as an error, so a candidate answering 422 to a third of
    the requests the baseline scores (a field it now requires) passed every step."""
    result, target, _ = run_default(lambda t, c: RefusingMetrics(t, c, {"1": 0.01, "2": 0.33}))
    assert result.status is CanaryState.ABORTED, result.reason
    assert target.weights == {"1": 100, "2": 0}
    assert result.reason.startswith("not promoting at step 5%: 4xx rate 33.00% over ")
    assert "> baseline 1.00% over " in result.reason and "+ 2.00% (z " in result.reason
    assert "refuses requests the baseline scores" in result.reason
    assert result.as_dict()["transitions"][-1]["reading"]["client_error_rate"] == 0.33  # type: ignore[index]
    assert "4xx 33.00%" in result.as_markdown()
    # the earlier count rule compares them too
    count = CanaryConfig(analysis="count", analysis_window_seconds=15, min_requests=5)
    result, _, _ = run_default(lambda t, c: RefusingMetrics(t, c, {"1": 0.0, "2": 0.5}), count)
    assert result.status is CanaryState.ABORTED and "4xx rate 50.00%" in result.reason


def test_a_4xx_share_like_the_baselines_or_the_check_off_is_no_reason_to_stop() -> None:
    same = {"1": 0.2, "2": 0.2}  # clients sending bad input to both versions alike
    result, _, _ = run_default(lambda t, c: RefusingMetrics(t, c, same))
    assert result.status is CanaryState.SUCCEEDED, result.reason
    worse = {"1": 0.0, "2": 0.5}
    off = CanaryConfig(max_client_error_increase=1.0)
    result, _, _ = run_default(lambda t, c: RefusingMetrics(t, c, worse), off)
    assert result.status is CanaryState.SUCCEEDED, result.reason
