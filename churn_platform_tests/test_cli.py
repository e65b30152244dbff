"""The README's run command, `python -m churn_platform run`, as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from churn_platform.core.synthetic import SyntheticSpec, generate
from churn_platform.targets.local import LocalProcessTarget

REPO = Path(__file__).resolve().parent.parent


def run_cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "MLFLOW_", "DAGSTER_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "churn_platform", "run", *args],
        cwd=REPO,
        env={**clean, "CHURN_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def home(tmp_path: Path):
    home = tmp_path / "home"
    yield home
    LocalProcessTarget(home / "deployments").stop_all()


def test_bad_settings_end_with_the_fix_not_a_traceback(home: Path, tmp_path: Path):
    missing = run_cli(home, CHURN_SOURCE="file", CHURN_SOURCE_PATH=str(tmp_path / "nope.csv"))
    assert missing.returncode == 1
    assert "nope.csv does not exist" in missing.stdout
    assert "set path to a .csv or .parquet file" in missing.stdout
    assert "Traceback" not in missing.stdout + missing.stderr

    empty = tmp_path / "empty.csv"
    generate(SyntheticSpec(n_rows=10)).head(0).to_csv(empty, index=False)
    zero = run_cli(home, CHURN_SOURCE="file", CHURN_SOURCE_PATH=str(empty))
    assert zero.returncode == 1 and "has no data rows" in zero.stdout
    assert "Traceback" not in zero.stdout + zero.stderr

    unset = run_cli(home, CHURN_SOURCE="file")
    assert unset.returncode == 2
    assert "CHURN_SOURCE=file needs CHURN_SOURCE_PATH" in unset.stderr


def test_main_command_releases_a_champion_and_a_second_run_records_a_decision(home: Path):
    first = run_cli(home)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "SUCCESS" in first.stdout and "gate decision: promote" in first.stdout
    url = re.search(r"serving in production: v1 at (http://127\.0\.0\.1:\d+)/predict", first.stdout)
    assert url, first.stdout
    row = generate(SyntheticSpec(n_rows=1, seed=3)).drop(columns=["customer_id", "churned"])
    record = json.loads(
        row.assign(signup_date=row["signup_date"].dt.strftime("%Y-%m-%d")).to_json(orient="records")
    )
    answer = httpx.post(f"{url.group(1)}/predict", json={"records": record}, timeout=10).json()
    assert 0.0 <= answer["probabilities"][0] <= 1.0 and answer["model_version"] == "1"

    second = run_cli(home)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "gate decision: keep the champion (challenger v2)" in second.stdout
    # the second run drew next week's customers: a new model, so a nonzero AUC difference
    delta = re.search(r"delta ([+-]\d\.\d{4})", second.stdout)
    assert delta and float(delta.group(1)) != 0.0, second.stdout
    assert "serving in production: v1 at" in second.stdout  # nothing from the first run is lost
    snapshots = sorted((home / "snapshots").glob("*.parquet"))
    assert len(snapshots) == 2 and len(pd.read_parquet(snapshots[0])) == 20_000
    first_rows, second_rows = (pd.read_parquet(p) for p in snapshots)
    assert not first_rows.equals(second_rows)
