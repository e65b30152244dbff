"""``python -m churn_platform sensors tick NAME [--commit]`` against a real instance: the
drift sensor's PSI per feature, window and threshold, its decision (run key and tags) and
its cursor are printed; a dry run stores nothing, ``--commit`` stores the cursor and the
observations as the daemon would, and the next tick starts from that cursor."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np

from churn_platform import cli
from churn_platform_tests.test_automation_spec import frame, log_requests, register_champion


def tick(capsys, *args: str) -> str:
    assert cli.main(["sensors", "tick", "psi_drift_sensor", *args]) == 0
    return capsys.readouterr().out


def observations(home: Path) -> int:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return len(instance.fetch_observations(dg.AssetKey("churn_snapshot"), limit=50).records)


def test_a_tick_prints_figures_decision_and_cursor_and_commits_only_when_asked(
    churn_home: Path, monkeypatch, capsys
):
    home = churn_home / "dagster"
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # restored after the test
    version = register_champion(frame(3_000, seed=1))
    busy = frame(1_000, seed=3, api_calls=np.random.default_rng(4).exponential(50, 1_000))
    log_requests(version, busy)

    out = tick(capsys)
    assert "(dry run: nothing stored)" in out and f"instance at {home}" in out
    assert "cursor before: none (the daemon never ticked it here)" in out
    assert "window inference_log: rows 1000, threshold 0.2, max_psi" in out
    for feature in ("api_calls", "seats", "plan"):  # the champion's drift features
        assert f"    psi_{feature}: " in out
    assert "decision: 1 run(s) requested" in out and "  run key drift-episode-1" in out
    assert '"churn/drift_feature": "api_calls"' in out
    after = json.loads(out.split("cursor after: ")[1].splitlines()[0])
    assert after  # the episode state the daemon would keep
    assert "no run was started" in out
    assert observations(home) == 0  # a dry run records nothing...
    assert "cursor before: none" in tick(capsys)  # ...and stores no cursor

    out = tick(capsys, "--commit")
    assert "stored the cursor" in out and "recorded 1 observation(s)" in out
    assert observations(home) == 1
    out = tick(capsys)  # the daemon's next tick: same episode, no second run
    stored = json.loads(out.split("cursor before: ")[1].splitlines()[0])
    assert stored == after
    assert "decision: skip:" in out and "run key" not in out
    # a stored state is updated in place (the daemon's), not through the workspace again
    assert "stored the cursor" in tick(capsys, "--commit")


def test_an_unknown_sensor_is_named_with_the_ones_there(churn_home: Path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(churn_home / "dagster"))
    assert cli.main(["sensors", "tick", "no_such_sensor"]) == 2
    err = capsys.readouterr().err
    assert "no sensor 'no_such_sensor'" in err and "psi_drift_sensor" in err


def test_the_performance_sensor_reads_model_performances_figures_in_a_dry_run(
    churn_home: Path, monkeypatch, capsys
):
    monkeypatch.setenv("DAGSTER_HOME", str(churn_home / "dagster"))
    version = register_champion(frame(3_000, seed=1))
    entry = {"holdout_auc": 0.85, "realized_auc": 0.70, "realized_upper": 0.72}
    document = churn_home / "monitoring" / "model_performance.json"
    document.parent.mkdir(parents=True, exist_ok=True)
    document.write_text(json.dumps({"updated": 1.0, "versions": {version: entry}}))
    assert cli.main(["sensors", "tick", "performance_sensor"]) == 0
    out = capsys.readouterr().out
    assert f"  run key performance-v{version}-episode-1" in out
    assert '"churn/trigger": "performance"' in out
