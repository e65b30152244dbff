"""core.deployment_step: the deployment assets' texts and metadata, and the staging hand-off
read back from a materialisation's metadata."""

from __future__ import annotations

from churn_platform.core import deployment_step as step
from churn_platform.core.records import DEPLOY, NO_ACTION, PROMOTED, ProductionResult
from churn_platform.core.release import Release, Staging
from churn_platform.core.rollout import EnvironmentState, ServedVersion


def production(*weights: tuple[str, int], endpoint: str | None = "http://router") -> Release:
    served = tuple(ServedVersion(v, f"models:/m/{v}", f"http://v{v}", w) for v, w in weights)
    return Release(
        ProductionResult(PROMOTED, "3", "3", "2", "promoted"),
        None,
        EnvironmentState("production", endpoint, served),
        repairs=("router restarted",),
    )


def test_the_mode_must_be_release_or_rollback():
    assert step.mode_problem("release") is None and step.mode_problem("rollback") is None
    assert step.mode_problem("yolo") == (
        "production_deployment config mode must be 'release' or 'rollback', got 'yolo'"
    )


def test_the_staging_hand_off_is_read_back_from_metadata():
    uri = lambda v: f"models:/m/{v}"  # noqa: E731
    kept = step.staged_from_metadata({"action": "no_action", "reason": "kept"}, uri)
    assert kept.action == NO_ACTION and kept.reason == "kept"
    staged = step.staged_from_metadata({"candidate_version": "3", "baseline_version": "none"}, uri)
    assert (staged.action, staged.candidate, staged.model_uri) == (DEPLOY, "3", "models:/m/3")
    assert staged.baseline is None
    logged = {"candidate_version": "3", "candidate_model_uri": "s3://x", "baseline_version": "2"}
    staged = step.staged_from_metadata(logged, uri)
    assert staged.model_uri == "s3://x" and staged.baseline == "2"


def test_staging_metadata_and_failure_name_the_candidate():
    state = EnvironmentState("staging", None, (ServedVersion("3", "models:/m/3", "http://v3", 0),))
    staged = Staging(ServedVersion("3", "models:/m/3", "http://v3", 0), None, (), state)
    meta = step.staging_metadata(staged)
    assert meta["baseline_version"] == "none" and meta["staging_endpoint"] is None
    assert meta["weights"] == "{'3': 0}" and meta["repaired"] == "nothing"
    assert step.staging_failure(staged).startswith("staging checks failed for version 3: ")


def test_release_metadata_reads_live_weights_and_names_a_disagreement():
    agreed = step.release_metadata(production(("3", 100)), None, "3", "2")
    assert agreed["weights"] == "{'3': 100}" and "disagreement" not in agreed
    assert agreed["repaired"] == "router restarted" and agreed["notes"] == "nothing"
    assert "outcome" not in agreed
    split = step.release_metadata(production(("3", 100)), {"2": 100, "3": 0}, "3", "2")
    assert split["weights"] == "{'2': 100, '3': 0}" and "rollback --to 2" in split["disagreement"]
    silent = step.release_metadata(production(("3", 100), endpoint=None), None, "3", None)
    assert silent["weights"] == "no router answers" and silent["previous_version"] == "none"
    assert "no production router answers" in silent["disagreement"]


def test_no_canary_is_nothing_to_release():
    assert step.canary_metadata(production(("3", 100))) == {
        "outcome": "nothing to release",
        "reason": "promoted",
    }
