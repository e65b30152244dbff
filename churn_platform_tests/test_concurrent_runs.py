"""Two `python -m churn_platform run` at once on one CHURN_HOME (issue 14, point 4): each run
trains on its own snapshot, evaluates, stages and releases the model it trained, or says why
not; afterwards the registry's `champion` and the running router agree.

The runs are real processes started together; nothing in the test waits on a clock. The
single-slot `churn_deployment` pool serialises their deployment steps in whatever order the
machine gives them, and the assertions hold for every order.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from churn_platform.targets.local import LocalProcessTarget

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
RUN_CONFIG = {
    "ops": {
        # small data: the model checks' bounds are loosened so both models get trained and
        # staged (what is tested is who ships what, not how good 4,000 rows make a model)
        "challenger_model": {
            "config": {
                "n_resamples": 200,
                "min_auc": 0.5,
                "min_slice_auc": 0.5,
                "min_invariance_fraction": 0.0,
            }
        },
        "evaluation_report": {"config": {"n_resamples": 200}},
        "production_deployment": {
            "config": {
                "steps": [50, 100],
                "analysis_window_seconds": 300.0,
                "interval_seconds": 0.5,
                "synthetic_traffic_rps": 40.0,
            }
        },
    }
}
# different customers per run, so the two models (and their data versions) differ
SEEDS = ("101", "202")


def _env(home: Path, seed: str) -> dict[str, str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "MLFLOW_", "DAGSTER_"))
    }
    return {
        **clean,
        "CHURN_HOME": str(home),
        "CHURN_SYNTHETIC_ROWS": "4000",
        "CHURN_SYNTHETIC_SEED": seed,
    }


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A CHURN_HOME whose Dagster instance and MLflow store exist (two processes creating the
    same SQLite schemas at the same instant is a different fault from the one tested here)."""
    home = tmp_path / "home"
    (home / "dagster").mkdir(parents=True)
    shutil.copy(REPO / "deploy/local/dagster.yaml", home / "dagster" / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home / "dagster")):
        pass
    monkeypatch.setenv("CHURN_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from churn_platform_tests.pipeline import resource

    resource("mlflow_registry").aliases()  # creates the store
    yield home
    LocalProcessTarget(home / "deployments").stop_all()


def _materialization(instance: dg.DagsterInstance, run_id: str, asset: str) -> Any:
    """``asset``'s materialisation in run ``run_id`` (its metadata as plain values)."""
    records = instance.get_records_for_run(
        run_id=run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    for record in records:
        event = record.event_log_entry.asset_materialization
        if event is not None and event.asset_key == dg.AssetKey(asset):
            return {k: v.value for k, v in event.metadata.items()}
    raise AssertionError(f"run {run_id} has no materialisation of {asset}")


def test_two_concurrent_runs_each_release_their_own_model_or_say_why_not(home: Path):
    config = home / "run.yaml"
    config.write_text(yaml.safe_dump(RUN_CONFIG))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "churn_platform", "run", "--config", str(config)],
            cwd=REPO,
            env=_env(home, seed),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for seed in SEEDS
    ]
    try:
        outputs = [proc.communicate(timeout=1500)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out

    released = []
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        for out in outputs:
            run_id = re.search(r"^run (\S+): SUCCESS", out, re.MULTILINE)
            assert run_id, out
            run = run_id.group(1)
            snapshot = _materialization(instance, run, "churn_snapshot")
            model = _materialization(instance, run, "challenger_model")
            own = str(model["model_version"])
            # trained on its own snapshot, not on the other run's stored value
            assert model["data_version"] == snapshot["data_version"], out
            report = _materialization(instance, run, "evaluation_report")
            assert str(report["challenger_version"]) == own, out
            staging = _materialization(instance, run, "staging_deployment")
            # the summary says what the run staged, against what staging holds when it ends
            # (a later run may have replaced it), and staging's notes name a newer candidate
            if staging.get("candidate_version"):
                assert re.search(rf"^  staged: v{staging['candidate_version']}\b", out, re.M), out
                assert "notes" in staging, staging
            production = _materialization(instance, run, "production_deployment")
            candidate = str(production["candidate_version"])
            if candidate == "none":  # nothing shipped: the run says why
                assert production["reason"], out
                assert f"release v{own}" not in out
            else:
                assert str(staging["candidate_version"]) == own, out
                assert candidate == own, f"run {run} released v{candidate}, trained v{own}\n{out}"
                assert re.search(rf"^  release v{own}: ", out, re.MULTILINE), out
                if production["action"] in ("promoted", "succeeded"):
                    released.append(own)
            # another run's value is named, never shipped silently
            assert not re.search(rf"release v(?!{own}\b)\d+", out), out
        assert released, f"neither run released its model:\n{outputs}"
        snapshots = {
            _materialization(instance, run.run_id, "churn_snapshot")["data_version"]
            for run in instance.get_runs()
        }
        assert len(snapshots) == 2  # the runs really had different data

    # afterwards: the registry and the running router agree
    status = subprocess.run(
        [sys.executable, "-m", "churn_platform.serving", "status"],
        cwd=REPO,
        env=_env(home, SEEDS[0]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    champion = state["registry_aliases"]["champion"]
    assert champion in released
    assert "disagreement" not in state["production"], state
    live = state["production"]["live_weights"]
    assert live and live[champion] == 100, state
