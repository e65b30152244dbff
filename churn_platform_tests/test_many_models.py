"""One code location, two models of different shape (issue: one platform, many models).

The platform file lists the shipped spec on the synthetic world and a second table (its own
columns, read from a CSV, its spec inferred by ``spec infer``). Both run end to end in one
Dagster instance; each is released with its own registered model, aliases, routes and
deployment state; a rollback of one leaves the other serving its champion; ``dg list defs``
shows both groups.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pandas as pd
import pytest

from churn_platform.cli import main as churn_main
from churn_platform.config import PlatformConfig, load_config
from churn_platform.core.mapping import apply_mapping
from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.definitions import build_definitions
from churn_platform.defs.week_runs import week_to_run
from churn_platform.resources.environments import platform_resources
from churn_platform.serving.integration import records
from churn_platform.targets.local import LocalProcessTarget
from churn_platform.testing import second_table
from churn_platform_tests.pipeline import FAST_GATE, FAST_MODEL, WEAK_MODEL, step_error

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
CANARY = {
    "steps": [50, 100],
    "analysis_window_seconds": 120.0,
    "interval_seconds": 0.5,
    "synthetic_traffic_rps": 60.0,
}
PLATFORM = """models:
  - name: churn
    spec: churn
    source: {kind: synthetic, rows: 6000}
  - name: accounts
    spec: accounts.yaml
    source: {kind: file, path: data/accounts.csv}
"""


@pytest.fixture
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A platform file with two models, the second table as CSV with its inferred spec."""
    home = tmp_path / "home"
    (tmp_path / "data").mkdir()
    data = tmp_path / "data" / "accounts.csv"
    second_table(n_rows=4_000, seed=3).to_csv(data, index=False)
    spec = tmp_path / "accounts.yaml"
    args = ["spec", "infer", str(data), "--target", "churn", "--id", "account_id", "-o", str(spec)]
    assert churn_main(args) == 0
    (tmp_path / "platform.yaml").write_text(PLATFORM)
    for var in [v for v in os.environ if v.startswith(("CHURN_", "MLFLOW_", "DAGSTER_"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("CHURN_HOME", str(home))
    monkeypatch.setenv("CHURN_PLATFORM", str(tmp_path / "platform.yaml"))
    config = load_config()
    yield config
    for model in config.models:
        LocalProcessTarget(model.state_dir(config.home)).stop_all()


def _run(config: PlatformConfig, model_name: str, job: str, instance: Any, ops: dict) -> Any:
    """Run ``model_name``'s job ``job`` with per-asset config ``ops`` (asset name -> config)."""
    model = config.model(model_name)
    defs = build_definitions(config)
    run_config = {"ops": {model.op(asset): {"config": cfg} for asset, cfg in ops.items()}}
    definition = defs.resolve_job_def(model.job(job))
    week = week_to_run(instance, model) if definition.partitions_def is not None else None
    result = definition.execute_in_process(
        run_config=run_config, instance=instance, raise_on_error=False, partition_key=week
    )
    assert result.success, step_error(result)
    return result


def _release(config: PlatformConfig, name: str, instance: Any, model_cfg: dict) -> None:
    ops = {
        "challenger_model": model_cfg,
        "evaluation_report": FAST_GATE,
        "production_deployment": CANARY,
    }
    _run(config, name, "end_to_end", instance, ops)


def _serving(config: PlatformConfig, name: str) -> tuple[str, dict[str, int]]:
    target = LocalProcessTarget(config.model(name).state_dir(config.home))
    return target.state("production").endpoint, target.live_weights("production") or {}


def test_two_models_release_and_roll_back_independently(platform: PlatformConfig) -> None:
    config = platform
    resources = platform_resources(config)
    churn_registry = resources[config.model("churn").resource_key("mlflow_registry")]
    accounts_registry = resources[config.model("accounts").resource_key("mlflow_registry")]
    assert (churn_registry.model_name, accounts_registry.model_name) == (
        "churn_model",
        "accounts_model",
    )
    instance = dg.DagsterInstance.ephemeral()
    _release(config, "churn", instance, WEAK_MODEL)
    _release(config, "accounts", instance, FAST_MODEL)
    _release(config, "churn", instance, FAST_MODEL)

    assert churn_registry.aliases() == {"champion": "2", "previous": "1", "challenger": "2"}
    assert accounts_registry.aliases() == {"champion": "1", "challenger": "1"}
    churn_url, churn_weights = _serving(config, "churn")
    accounts_url, accounts_weights = _serving(config, "accounts")
    assert churn_url != accounts_url
    assert churn_weights == {"1": 0, "2": 100} and accounts_weights == {"1": 100}

    _run(config, "churn", "rollback", instance, {"production_deployment": {"mode": "rollback"}})
    assert churn_registry.alias_version("champion") == "1"
    assert _serving(config, "churn") == (churn_url, {"1": 100, "2": 0})
    # the other model is untouched: same aliases, same route, same weights, and it answers
    assert accounts_registry.aliases() == {"champion": "1", "challenger": "1"}
    assert _serving(config, "accounts") == (accounts_url, {"1": 100})
    accounts = config.model("accounts")
    raw = pd.read_csv(accounts.source.path, dtype=str, keep_default_na=False).head(50)
    mapped = apply_mapping(raw, spec=accounts.spec).frame.dropna().head(3)
    rows = records(mapped, accounts.spec)
    answer = httpx.post(f"{accounts_url}/predict", json={"records": rows}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == "1" and len(answer.json()["probabilities"]) == 3
    churn_rows = records(generate(SyntheticSpec(n_rows=2, seed=1)), config.model("churn").spec)
    answer = httpx.post(f"{churn_url}/predict", json={"records": churn_rows}, timeout=10)
    assert answer.status_code == 200 and answer.json()["model_version"] == "1"
    refused = httpx.post(f"{accounts_url}/predict", json={"records": churn_rows}, timeout=10)
    assert 400 <= refused.status_code < 500  # the accounts model takes its own columns

    # each model's history is under its own key prefix
    for name in ("churn", "accounts"):
        key = dg.AssetKey(list(config.model(name).key("production_deployment")))
        assert instance.get_latest_materialization_event(key) is not None


def test_dg_list_defs_shows_both_models(platform: PlatformConfig, tmp_path: Path) -> None:
    dg_bin = Path(sys.executable).parent / "dg"
    if not dg_bin.exists():
        pytest.skip(f"{dg_bin} missing: pip install -c constraints.txt -e '.[dev]'")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster"), "NO_COLOR": "1"}
    (tmp_path / "dagster").mkdir()
    done = subprocess.run(
        [str(dg_bin), "list", "defs", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    listed = json.loads(done.stdout)
    keys = {a["asset_key"] for a in listed["assets"]}
    groups = {a.get("group_name") for a in listed["assets"]}
    for name in ("churn", "accounts"):
        assert f"{name}/churn_snapshot" in keys and f"{name}/production_deployment" in keys
        assert name in groups
    jobs = {j["name"] for j in listed.get("jobs", [])}
    assert {"churn_end_to_end", "accounts_end_to_end", "accounts_rollback"} <= jobs
