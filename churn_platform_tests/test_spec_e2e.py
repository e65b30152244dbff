"""Issue 12's promise, end to end, as a user runs it: a table of another shape goes through
``spec infer``, a small edit of the YAML (two slices, one invariance) and
``python -m churn_platform run``, with no Python written for it.

The table (``churn_platform.testing.second_table``) has 20 columns: five categoricals,
yes/no and true/false flags, numbers stored as text with blanks, a free-text column, a
yes/no target; no date and no hour. The test then reads what a person would look at: the
contract checks on the Dagster instance (named after its columns), the promoted and served
model (``/predict`` answers its columns and refuses a missing one by name), and the drift
sensor (PSI over its features). A second run after the spec drops a feature trains a
challenger on the new spec, compares it with the champion on the old one, and serves the
winner with the winner's request schema.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pandas as pd
import pytest

from churn_platform.core.spec import Spec, load_spec, spec_of_model_metadata
from churn_platform.definitions import build_definitions
from churn_platform.settings import MODEL_NAME
from churn_platform.targets.local import LocalProcessTarget
from churn_platform.testing import SECOND_TABLE_BLANKS, second_table
from churn_platform_tests.pipeline import resource, sensor

REPO = Path(__file__).resolve().parent.parent


SLICES_AND_INVARIANCE = """slices:
  - name: plan
    column: plan
    values: all
  - name: tenure
    column: age_months
    bands:
      new: [0, 24]
      established: [24, null]
"""
INVARIANCE = """invariances:
  - name: yearly_billing_invariance
    feature: billing
    from: monthly
    to: yearly
    direction: decrease  # paying yearly must lower predicted churn
    min_fraction: 0.9
"""


def churn_cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m churn_platform ARGS`` in a subprocess with a clean environment and ``home``."""
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "MLFLOW_", "DAGSTER_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "churn_platform", *args],
        cwd=REPO,
        env={**clean, "CHURN_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """A fresh CHURN_HOME, the second table as CSV, and this process pointed at both."""
    home = tmp_path / "home"
    data = tmp_path / "data" / "accounts.csv"
    data.parent.mkdir()
    second_table(n_rows=5_000, seed=0).to_csv(data, index=False)
    spec_file = tmp_path / "accounts.yaml"
    for var in [v for v in os.environ if v.startswith(("CHURN_", "MLFLOW_", "DAGSTER_"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("CHURN_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.setenv("CHURN_SOURCE", "file")
    monkeypatch.setenv("CHURN_SOURCE_PATH", str(data))
    monkeypatch.setenv("CHURN_SPEC", str(spec_file))
    yield {"home": home, "data": data, "spec": spec_file}
    LocalProcessTarget(home / "deployments").stop_all()


def run_pipeline(ws: dict[str, Path]) -> str:
    """``python -m churn_platform run`` on the file source with the edited spec; its stdout."""
    out = churn_cli(
        ws["home"],
        "run",
        CHURN_SOURCE="file",
        CHURN_SOURCE_PATH=str(ws["data"]),
        CHURN_SPEC=str(ws["spec"]),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    return out.stdout


def check_names(home: Path) -> dict[str, set[str]]:
    """Asset -> names of the check evaluations of the latest run on the instance."""
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        run = instance.get_runs(limit=1)[0]
        records = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records
        out: dict[str, set[str]] = {}
        for record in records:
            event = record.event_log_entry.dagster_event
            assert event is not None
            data = event.event_specific_data
            out.setdefault(data.asset_key.to_user_string(), set()).add(data.check_name)
        return out


def served(stdout: str) -> tuple[str, str]:
    """(version, production URL) from a run summary."""
    found = re.search(r"serving in production: v(\d+) at (http://127\.0\.0\.1:\d+)/predict", stdout)
    assert found, stdout
    return found.group(1), found.group(2)


def model_spec(version: str) -> Spec:
    """The spec logged with a registered version (a model carries its own spec)."""
    import mlflow

    from churn_platform.settings import default_mlflow_uri

    mlflow.set_tracking_uri(default_mlflow_uri())
    info = mlflow.models.get_model_info(f"models:/{MODEL_NAME}/{version}")
    return spec_of_model_metadata(info.metadata)


def request_records(spec: Spec, rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of the CSV as JSON request records of ``spec``'s features, typed by kind."""
    records = []
    for _, row in rows.iterrows():
        record: dict[str, Any] = {}
        for name, feature in spec.features.items():
            text = str(row[spec.source_of(name)])
            if feature.kind == "boolean":
                record[name] = text.lower() in ("yes", "true")
            elif feature.kind == "integer":
                record[name] = int(text)
            elif feature.kind == "numeric":
                record[name] = float(text)
            else:
                record[name] = text
        records.append(record)
    return records


def complete_rows(data: Path, n: int) -> pd.DataFrame:
    """``n`` rows of the CSV without a blank cell."""
    rows = pd.read_csv(data, dtype=str, keep_default_na=False)
    return rows[(rows[list(SECOND_TABLE_BLANKS)] != "").all(axis=1)].head(n)


def assert_predict_follows(url: str, version: str, spec: Spec, data: Path) -> None:
    """``/predict`` answers ``spec``'s columns and refuses a missing one, naming it."""
    records = request_records(spec, complete_rows(data, 3))
    answer = httpx.post(f"{url}/predict", json={"records": records}, timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == version
    assert len(body["probabilities"]) == 3 and all(0 <= p <= 1 for p in body["probabilities"])
    dropped = next(iter(spec.features))
    partial = [{k: v for k, v in r.items() if k != dropped} for r in records]
    refused = httpx.post(f"{url}/predict", json={"records": partial}, timeout=30)
    assert 400 <= refused.status_code < 500, refused.text
    assert dropped in refused.text


def tick_drift_sensor(source_path: Path) -> Any:
    """One evaluation of the PSI drift sensor on ``source_path`` against the champion."""
    from churn_platform.resources.data_source import FileSourceResource
    from churn_platform.resources.notify import Notifier

    context = dg.build_sensor_context(
        definitions=build_definitions(),
        resources={
            "mlflow_registry": resource("mlflow_registry"),
            "data_source": FileSourceResource(path=str(source_path)),
            "inference_log": resource("inference_log"),
            "notifier": Notifier(),
            "storage": resource("storage"),
        },
        instance=dg.DagsterInstance.ephemeral(),
    )
    return sensor("psi_drift_sensor").evaluate_tick(context)


def psi_of(tick: Any) -> dict[str, float]:
    """The source window's ``psi_<feature>`` values of a tick."""
    for event in tick.asset_events:
        meta = {k: v.value for k, v in event.metadata.items()}
        if meta.get("drift_window") == "source_snapshot":
            return {
                k.removeprefix("psi_"): float(v) for k, v in meta.items() if k.startswith("psi_")
            }
    raise AssertionError(f"no source_snapshot observation in {tick}")


def test_a_table_of_another_shape_runs_end_to_end_from_an_inferred_spec(workspace, tmp_path):
    ws = workspace
    # 1. infer
    inferred = churn_cli(
        ws["home"], "spec", "infer", str(ws["data"]), "--target", "churn", "--id", "account_id",
        "-o", str(ws["spec"]),
    )  # fmt: skip
    assert inferred.returncode == 0, inferred.stdout + inferred.stderr
    # 2. edit: two slices and one invariance, as text, keeping the comments
    text = ws["spec"].read_text()
    assert text.count("slices: []") == 1 and text.count("invariances: []") == 1
    ws["spec"].write_text(
        text.replace("slices: []\n", SLICES_AND_INVARIANCE).replace("invariances: []\n", INVARIANCE)
    )
    checked = churn_cli(ws["home"], "spec", "check", str(ws["data"]), "--spec", str(ws["spec"]))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    spec = load_spec(ws["spec"])
    assert spec.slice_names() == [
        "plan:basic", "plan:premium", "plan:standard", "tenure:new", "tenure:established",
    ]  # fmt: skip
    assert "email" not in spec.features and "nps" in spec.features
    # 3. run
    first = run_pipeline(ws)
    assert "gate decision: promote" in first, first
    version, url = served(first)

    names = check_names(ws["home"])
    contract_checks = names["validated_churn_data"]
    for expected in ("account_id_unique", "plan_in_set", "usage_hours_null_rate", "churn_in_set"):
        assert expected in contract_checks, sorted(contract_checks)
    example_columns = ("customer_id", "tenure_months", "contract_type", "region", "signup_date")
    assert not [n for n in contract_checks if n.startswith(example_columns)], contract_checks
    assert "yearly_billing_invariance" in names["challenger_model"], names["challenger_model"]

    assert model_spec(version).hash == spec.hash  # the model carries the spec it was trained on
    assert_predict_follows(url, version, spec, ws["data"])

    # the drift sensor watches this table's features: stable data, then usage doubled
    stable = psi_of(tick_drift_sensor(ws["data"]))
    assert set(stable) == set(spec.drift_features())
    assert max(stable.values()) <= spec.drift.threshold, stable
    shifted_rows = pd.read_csv(ws["data"], dtype=str, keep_default_na=False)
    usage = pd.to_numeric(shifted_rows["usage_hours"], errors="coerce") * 2
    shifted_rows["usage_hours"] = usage.round(1).astype(str).replace("nan", "")
    shifted = tmp_path / "shifted" / "accounts.csv"
    shifted.parent.mkdir()
    shifted_rows.to_csv(shifted, index=False)
    tick = tick_drift_sensor(shifted)
    assert psi_of(tick)["usage_hours"] > spec.drift.threshold
    assert [r.tags["churn/drift_feature"] for r in tick.run_requests] == ["usage_hours"]

    # 4. the spec drops a feature: a challenger on the new spec against the champion on the old
    text = ws["spec"].read_text()
    block = re.search(r"^  nps:\n(?:    .*\n|    #.*\n)*", text, re.M)
    assert block, text
    ws["spec"].write_text(text.replace(block.group(0), ""))
    new_spec = load_spec(ws["spec"])
    assert "nps" not in new_spec.features

    second = run_pipeline(ws)
    decision = re.search(
        r"gate decision: (promote|keep the champion) \(challenger v(\d+)\)", second
    )
    assert decision, second
    challenger = decision.group(2)
    assert challenger != version
    assert model_spec(challenger).hash == new_spec.hash
    assert model_spec(version).hash == spec.hash  # nothing of the old champion is lost
    winner, url = served(second)
    assert winner == (challenger if decision.group(1) == "promote" else version)
    winner_spec = model_spec(winner)
    assert_predict_follows(url, winner, winner_spec, ws["data"])
    if winner == version:  # the old champion still wants nps, whatever the current spec says
        records = request_records(new_spec, complete_rows(ws["data"], 1))
        refused = httpx.post(f"{url}/predict", json={"records": records}, timeout=30)
        assert 400 <= refused.status_code < 500 and "nps" in refused.text
    with dg.DagsterInstance.from_config(str(ws["home"] / "dagster")) as inst:
        report = inst.get_latest_materialization_event(dg.AssetKey("evaluation_report"))
        assert report is not None and report.asset_materialization is not None
        metadata = json.dumps(
            {k: str(v.value) for k, v in report.asset_materialization.metadata.items()}
        )
    assert "features dropped: nps" in metadata, metadata
