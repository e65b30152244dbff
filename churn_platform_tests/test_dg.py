"""``dg`` (dagster-dg-cli) works on the project through ``[tool.dg]`` in pyproject.toml.

``dg check defs`` loads the code location and ``dg list defs`` lists the platform's assets
(the seven of the release graph and the two weekly-partitioned ones), the same graph
``dagster definitions validate -w workspace.yaml`` loads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
DG = Path(sys.executable).parent / "dg"
ASSETS = {
    "churn_snapshot",
    "validated_churn_data",
    "holdout_set",
    "challenger_model",
    "evaluation_report",
    "staging_deployment",
    "production_deployment",
    "model_performance",  # weekly partitions
    "churn_scores",  # weekly partitions
}


def _dg(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    if not DG.exists():
        pytest.skip(f"{DG} missing: pip install -c constraints.txt -e '.[dev]' (dagster-dg-cli)")
    env = dict(os.environ)
    env.update(CHURN_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), NO_COLOR="1")
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(DG), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def test_dg_check_defs_loads_the_project(tmp_path: Path) -> None:
    done = _dg("check", "defs", home=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All definitions loaded successfully" in done.stdout + done.stderr


def test_dg_list_defs_shows_the_seven_assets(tmp_path: Path) -> None:
    done = _dg("list", "defs", "--json", home=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    listed = json.loads(done.stdout)
    assert {a["asset_key"] for a in listed["assets"]} == ASSETS
    jobs = {j["name"] for j in listed.get("jobs", [])}
    assert "churn_retraining" in jobs


def test_dg_launch_materializes_the_snapshot_and_runs_the_contract(tmp_path: Path) -> None:
    from dagster import AssetKey, DagsterInstance, DagsterRunStatus

    week = "2026-11-08"  # the weekly data is partitioned: dg launch names the week
    done = _dg(
        "launch",
        "--assets",
        "churn_snapshot,validated_churn_data",
        "--partition",
        week,
        home=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
        (run,) = instance.get_runs()
        assert run.status == DagsterRunStatus.SUCCESS
        event = instance.get_latest_materialization_event(AssetKey("validated_churn_data"))
        assert event is not None and event.run_id == run.run_id
        assert event.asset_materialization is not None
        assert event.asset_materialization.partition == week
