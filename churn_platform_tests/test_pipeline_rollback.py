"""Rollback on demand through the asset (issue 14): two promotions with real model
servers, then production_deployment in rollback mode puts the previous version back on
100% at the same endpoint and swaps the aliases, with the action in the metadata."""

from __future__ import annotations

import os
import subprocess
import sys
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

CANARY = {
    "steps": [50, 100],
    "analysis_window_seconds": 120.0,
    "interval_seconds": 0.5,
    "synthetic_traffic_rps": 60.0,
}


def test_rollback_after_two_promotions(local_platform: Path):
    instance = dg.DagsterInstance.ephemeral()
    for model in (WEAK_MODEL, FAST_MODEL):
        release_graph(instance, model, CANARY)
    reg = registry()
    assert (reg.alias_version("champion"), reg.alias_version("previous")) == ("2", "1")
    target = LocalProcessTarget(local_platform / "deployments")
    endpoint = target.state("production").endpoint
    assert target.live_weights("production") == {"1": 0, "2": 100}

    back = materialize(
        ["production_deployment"],
        instance,
        {"production_deployment": {"config": {"mode": "rollback", "reason": "pager"}}},
    )
    assert back.success, step_error(back)
    assert (reg.alias_version("champion"), reg.alias_version("previous")) == ("1", "2")
    assert target.live_weights("production") == {"1": 100, "2": 0}
    assert target.state("production").endpoint == endpoint
    rows = records(generate(SyntheticSpec(n_rows=2, seed=1)), default_spec())
    answer = httpx.post(f"{endpoint}/predict", json={"records": rows}, timeout=10)
    assert answer.status_code == 200 and answer.json()["model_version"] == "1"
    materialization = instance.get_latest_materialization_event(
        dg.AssetKey("production_deployment")
    )
    assert materialization is not None and materialization.asset_materialization is not None
    meta = materialization.asset_materialization.metadata
    assert meta["action"].value == "rollback" and "pager" in meta["reason"].value
    assert meta["weights"].value == "{'1': 100, '2': 0}" and "disagreement" not in meta
    assert checks(back)[("production_deployment", "registry_aliases")].passed

    # the command a person runs (the alert names it): back to v2, in a subprocess
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DAGSTER_"))}
    cli = subprocess.run(
        [sys.executable, "-m", "churn_platform", "rollback", "--reason", "pager again"],
        cwd=Path(__file__).resolve().parent.parent,
        env={**env, "CHURN_HOME": str(local_platform)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "release v2: " in cli.stdout and "pager again" in cli.stdout
    assert f"serving in production: v2 at {endpoint}/predict" in cli.stdout
    assert "DISAGREEMENT" not in cli.stdout
    assert (reg.alias_version("champion"), reg.alias_version("previous")) == ("2", "1")
    assert target.live_weights("production") == {"1": 0, "2": 100}


def test_a_registry_that_refuses_the_alias_move_is_reported_and_repairable(
    local_platform: Path, monkeypatch: pytest.MonkeyPatch
):
    from churn_platform.core import release
    from churn_platform.resources.mlflow_registry import MlflowRegistry

    instance = dg.DagsterInstance.ephemeral()
    release_graph(instance, WEAK_MODEL, CANARY)
    calls = []
    original = MlflowRegistry.set_alias

    def locked(self, alias, version):  # the MLflow database locked at the 100% step
        calls.append((alias, version))
        raise RuntimeError("(sqlite3.OperationalError) database is locked")

    staged = materialize(
        THROUGH_STAGING,
        instance,
        {"challenger_model": {"config": FAST_MODEL}, "evaluation_report": {"config": FAST_GATE}},
    )
    assert staged.success, step_error(staged)
    monkeypatch.setattr(MlflowRegistry, "set_alias", locked)
    monkeypatch.setattr(release, "ALIAS_RETRY_SECONDS", 0.0)
    second = materialize(
        ["production_deployment"], instance, {"production_deployment": {"config": CANARY}}
    )
    monkeypatch.setattr(MlflowRegistry, "set_alias", original)
    assert not second.success  # a blocking check failed: the run says so
    assert len(calls) == release.ALIAS_ATTEMPTS
    aliases = checks(second)[("production_deployment", "registry_aliases")]
    assert not aliases.passed
    assert aliases.metadata["repair"].value == "python -m churn_platform rollback --to 2"
    reg = registry()
    assert reg.alias_version("champion") == "1"
    target = LocalProcessTarget(local_platform / "deployments")
    assert target.live_weights("production") == {"1": 0, "2": 100}

    # the repair command's job: traffic stays on v2, the aliases follow
    fixed = materialize(
        ["production_deployment"],
        instance,
        {"production_deployment": {"config": {"mode": "rollback", "to_version": "2"}}},
    )
    assert fixed.success, step_error(fixed)
    assert (reg.alias_version("champion"), reg.alias_version("previous")) == ("2", "1")
    assert target.live_weights("production") == {"1": 0, "2": 100}


def test_a_run_releases_what_it_staged_even_when_another_run_staged_meanwhile(
    local_platform: Path, monkeypatch: pytest.MonkeyPatch
):
    """Two runs at once: between this run's staging and its release another run stored
    its own staged candidate (v99 here). This run releases its own and says so."""
    from churn_platform.core import records as r
    from churn_platform.resources.io_manager import DataIOManager

    original = DataIOManager.load_input
    other = r.StagingResult(r.DEPLOY, candidate="99", model_uri="models:/churn_model/99")

    def racing(self, context):
        if context.asset_key == dg.AssetKey("staging_deployment"):
            return other  # what the shared stored value holds once the other run staged
        return original(self, context)

    monkeypatch.setattr(DataIOManager, "load_input", racing)
    instance = dg.DagsterInstance.ephemeral()
    run = release_graph(instance, WEAK_MODEL, CANARY)
    released = run.output_for_node("production_deployment")
    assert released.action == r.PROMOTED and released.candidate == "1"
    assert registry().alias_version("champion") == "1"
    materialization = instance.get_latest_materialization_event(
        dg.AssetKey("production_deployment")
    )
    assert materialization is not None and materialization.asset_materialization is not None
    notes = materialization.asset_materialization.metadata["notes"].value
    assert "another run staged v99 meanwhile; this run releases its own v1" in notes
