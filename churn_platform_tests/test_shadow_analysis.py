"""The shadow step's logic on a fake clock: the comparison statistics, the thresholds and
what ``run_canary`` does around the mirror (always turned off, a failing start aborts, an
undecided shadow aborts). The real router and servers are in ``test_shadow.py``."""

from __future__ import annotations

import numpy as np
import pytest

from churn_platform.core.canary import CanaryConfig, CanaryState, Collaborators, Rollout, run_canary
from churn_platform.core.canary.comparison import (
    compare,
    offline_thresholds,
    rank_correlation,
    score_problem,
    score_psi,
    top_decile_agreement,
)
from churn_platform.core.rollout import (
    EnvironmentState,
    ErrorRate,
    ServedVersion,
    ShadowObservations,
    ShadowTarget,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class MirrorTarget:
    """Weights and a mirror in memory; the mirror's record comes from ``observe``."""

    def __init__(self, observe: ShadowObservations | None, start_fails: bool = False) -> None:
        self.weights = {"1": 100, "2": 0}
        self.mirror: list[str | None] = []
        self.observe = observe
        self.start_fails = start_fails

    def deploy(self, environment: str, version: str, model_uri: str) -> ServedVersion:
        raise NotImplementedError

    def set_weights(self, environment: str, weights: dict[str, int]) -> EnvironmentState:
        self.weights = {v: weights.get(v, 0) for v in self.weights}
        return self.state(environment)

    def state(self, environment: str) -> EnvironmentState:
        versions = tuple(ServedVersion(v, "", f"http://{v}", w) for v, w in self.weights.items())
        return EnvironmentState(environment, "http://router", versions)

    def retire(self, environment: str, version: str) -> None:
        raise NotImplementedError

    def set_mirror(self, environment: str, version: str | None, percent: int = 100) -> None:
        if version is not None and self.start_fails:
            raise RuntimeError("router refused")
        self.mirror.append(version)

    def shadow_observations(self, environment: str) -> ShadowObservations | None:
        return self.observe


class Healthy:
    """Every version error-free, 50 more requests per reading."""

    def __init__(self) -> None:
        self.n = 0

    def error_rate(self, version: str, window_seconds: float) -> ErrorRate:
        self.n += 1
        return ErrorRate(version, 0.0, 50.0 * self.n, "scripted", "", 0.01)


class Refusing(Healthy):
    """Error-free, but the candidate answers a 4xx to every mirrored copy."""

    def error_rate(self, version: str, window_seconds: float) -> ErrorRate:
        reading = super().error_rate(version, window_seconds)
        refused = 1.0 if version == "2" else 0.0
        return ErrorRate(version, 0.0, reading.request_count, "scripted", "", 0.01, refused)


def observations(candidate: np.ndarray, baseline: np.ndarray) -> ShadowObservations:
    n = len(baseline)
    return ShadowObservations(
        "2", n, 0, tuple(baseline), tuple(candidate), (0.01,) * n, (0.01,) * n
    )


RNG = np.random.default_rng(3)
BASE = RNG.beta(2, 6, 400)


def run(target: MirrorTarget, config: CanaryConfig | None = None):
    clock = Clock()
    tools = Collaborators(target, Healthy(), sleep=clock.sleep, clock=clock)
    return run_canary(tools, Rollout("p", "2", "1"), config or CanaryConfig())


def test_the_statistics_tell_a_shuffled_ranking_from_a_faithful_one() -> None:
    shuffled = RNG.permutation(BASE)
    assert rank_correlation(BASE, BASE * 0.9 + 0.01) == pytest.approx(1.0)
    assert abs(rank_correlation(BASE, shuffled) or 0.0) < 0.2
    assert score_psi(BASE, shuffled) == pytest.approx(0.0)  # same distribution
    assert top_decile_agreement(BASE, BASE) == 1.0
    assert (top_decile_agreement(BASE, shuffled) or 0.0) < 0.4
    assert score_psi(BASE, np.clip(BASE + 0.3, 0, 1)) > 0.25
    # nothing to rank when the traffic repeats one record; a constant candidate ranks nothing
    assert rank_correlation(np.full(50, 0.3), BASE[:50]) is None
    assert rank_correlation(BASE[:50], np.full(50, 0.3)) == 0.0
    config = CanaryConfig()
    assert "rank correlation" in score_problem(compare(observations(shuffled, BASE), 100), config)
    assert score_problem(compare(observations(BASE, BASE), 100), config) == ""
    assert compare(observations(shuffled, BASE), 500).rank_correlation is None  # too few pairs


def test_a_candidate_meant_to_differ_passes_where_a_broken_one_still_fails() -> None:
    """A retrained model beside a weak champion differs from it on the holdout already; the
    thresholds follow that offline pair, and a shuffled copy of the candidate still fails."""
    weak = np.clip(0.25 + 0.05 * (BASE - BASE.mean()) + 0.02 * RNG.standard_normal(len(BASE)), 0, 1)
    config = CanaryConfig()
    fixed = score_problem(compare(observations(BASE, weak), 100), config)
    assert "score PSI" in fixed or "rank correlation" in fixed  # the fixed bounds stop it
    loosened, note = offline_thresholds(config, weak, BASE)
    assert "from the holdout" in note and "PSI" in note
    assert loosened.shadow_max_score_psi > config.shadow_max_score_psi
    assert score_problem(compare(observations(BASE, weak), 100), loosened) == ""
    shuffled = RNG.permutation(BASE)
    assert "rank correlation" in score_problem(compare(observations(shuffled, weak), 100), loosened)
    # a pair that agrees offline keeps the configured bounds: they only ever loosen
    same, _ = offline_thresholds(config, BASE, BASE * 0.9 + 0.01)
    assert same.shadow_min_rank_correlation == config.shadow_min_rank_correlation
    assert same.shadow_max_score_psi >= config.shadow_max_score_psi


def test_a_healthy_shadow_passes_and_turns_the_mirror_off_before_the_first_step() -> None:
    target = MirrorTarget(observations(BASE * 0.95, BASE))
    assert isinstance(target, ShadowTarget)
    result = run(target)
    assert result.status is CanaryState.SUCCEEDED, result.as_markdown()
    assert target.mirror == ["2", None]
    states = [t.to_state for t in result.transitions]
    assert states[:3] == [CanaryState.SHADOWING] * 2 + [CanaryState.PROGRESSING]
    passed = next(t for t in result.transitions if t.reason.startswith("shadow passed"))
    assert passed.weights == {"1": 100, "2": 0} and "mirror off" in passed.reason
    assert passed.shadow is None and result.transitions[1].shadow is not None
    assert "| shadow comparison |" in result.as_markdown()


def test_a_shuffled_candidate_is_rolled_back_in_shadow_and_never_gets_traffic() -> None:
    target = MirrorTarget(observations(RNG.permutation(BASE), BASE))
    result = run(target)
    assert result.status is CanaryState.ROLLED_BACK
    assert "rank correlation" in result.reason and target.mirror == ["2", None]
    assert all(t.weights == {"1": 100, "2": 0} for t in result.transitions)
    assert result.rollback_seconds is not None
    assert result.as_dict()["transitions"][-2]["shadow"]["rank_correlation"] < 0.2  # type: ignore[index]


def test_a_slower_candidate_on_the_same_requests_is_rolled_back() -> None:
    slow = observations(BASE, BASE)
    slow = ShadowObservations(
        "2", slow.requests, 0, slow.champion_scores, slow.candidate_scores,
        (0.01,) * slow.requests, (0.5,) * slow.requests,
    )  # fmt: skip
    result = run(MirrorTarget(slow))
    assert result.status is CanaryState.ROLLED_BACK
    assert "p95 latency on the same requests 500 ms" in result.reason


def test_a_shadow_that_cannot_start_or_decide_aborts_with_the_mirror_off() -> None:
    refused = MirrorTarget(observations(BASE, BASE), start_fails=True)
    result = run(refused)
    assert result.status is CanaryState.ABORTED and "could not start the shadow" in result.reason
    assert refused.weights == {"1": 100, "2": 0}

    empty = MirrorTarget(None)  # no paired scores ever: the shadow cannot pass
    result = run(empty, CanaryConfig(analysis_window_seconds=5))
    assert result.status is CanaryState.ABORTED and "shadow undecided" in result.reason
    assert empty.mirror == ["2", None] and empty.weights == {"1": 100, "2": 0}


def test_without_the_shadow_the_first_step_gets_traffic_at_once() -> None:
    target = MirrorTarget(observations(BASE, BASE))
    result = run(target, CanaryConfig(shadow=False))
    assert result.status is CanaryState.SUCCEEDED and target.mirror == []
    assert CanaryState.SHADOWING not in {t.to_state for t in result.transitions}


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"shadow_percent": 0}, "shadow_percent"),
        ({"shadow_percent": 101}, "shadow_percent"),
        ({"shadow_min_pairs": 1}, "shadow_min_pairs"),
        ({"shadow_min_rank_correlation": 1.5}, "shadow_min_rank_correlation"),
        ({"shadow_max_score_psi": 0}, "shadow_max_score_psi"),
        ({"shadow_offline_margin": -0.1}, "shadow_offline_margin"),
    ],
)
def test_shadow_settings_are_validated(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=f"CanaryConfig.{name}"):
        CanaryConfig(**kwargs)  # type: ignore[arg-type]


def test_a_candidate_refusing_the_copies_stops_the_release_in_shadow() -> None:
    """It pairs no scores (every copy a 422), so the score checks never run; its 4xx share
    on the same requests ends the release before any client request reaches it."""
    target = MirrorTarget(ShadowObservations("2", 400, 0))
    clock = Clock()
    tools = Collaborators(target, Refusing(), sleep=clock.sleep, clock=clock)
    result = run_canary(tools, Rollout("p", "2", "1"), CanaryConfig())
    assert result.status is CanaryState.ABORTED, result.as_markdown()
    assert result.reason.startswith("not promoting after the shadow: 4xx rate 100.00% over ")
    assert "no client request reached 2" in result.reason and target.mirror == ["2", None]
    assert all(t.weights == {"1": 100, "2": 0} for t in result.transitions)
