"""`python -m churn_platform demo` as a newcomer runs it: weeks through the real jobs, a table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from churn_platform import demo

REPO = Path(__file__).resolve().parent.parent
WEEKS = len(demo.WEEKS)


def processes_of(home: Path) -> list[int]:
    """Pids of live processes started with ``CHURN_HOME=home``."""
    marker = f"CHURN_HOME={home}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ:
            pids.append(int(proc.name))
    return pids


def test_a_bad_weeks_count_or_a_used_home_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match=r"--weeks must be in 1\.\.6, got 9"):
        demo.play(tmp_path / "new", weeks=9)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty; pass a new folder with --home"):
        demo.play(tmp_path / "used", weeks=1)
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"


@pytest.mark.integration
@pytest.mark.slow
def test_the_demo_plays_every_week_and_ends_with_the_table(tmp_path: Path):
    home = tmp_path / "demo"
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("CHURN_", "MLFLOW_", "DAGSTER_"))
    }
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "churn_platform",
            "demo",
            "--weeks",
            str(WEEKS),
            "--home",
            str(home),
        ],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    text = out.stdout
    assert out.returncode == 0, text[-4000:] + out.stderr[-4000:]
    rows = {
        int(m.group(1)): m.group(0) for m in re.finditer(r"^\| (\d) \| .*\|$", text, re.MULTILINE)
    }
    assert sorted(rows) == list(range(1, WEEKS + 1)), text[-3000:]
    assert "**released**" in rows[1] and "(champion v1)" in rows[1]
    assert "**staged**" in rows[2] and "psi_drift_sensor: monthly_spend" in rows[2]
    assert "drift-episode-1" in rows[2] and "promote v2" in rows[2]
    assert "**stopped_in_staging**" in rows[3] and "api_contract" in rows[3]
    assert "weekly_retraining" in rows[3] and "v1 100%" in rows[3]
    assert "**rolled_back**" in rows[4] and "v1 100% (champion v1)" in rows[4]
    assert "**promoted**" in rows[5] and "v5 100% (champion v5)" in rows[5]
    # concept drift: PSI quiet, one performance run for the episode, the retrained model
    # wins the gate and is released; the champion's realized AUC fell, the estimate did not
    assert "**promoted**" in rows[6] and "v6 100% (champion v6)" in rows[6]
    assert "performance_sensor: realized AUC" in rows[6] and "performance-v5-episode-1" in rows[6]
    assert "psi_drift_sensor: PSI quiet" in rows[6] and "a second tick: no run" in rows[6]
    assert "promote v6" in rows[6] and "vs v5" in rows[6]
    assert "psi_drift_sensor: skipped" in text and "performance_sensor: skipped" in text
    realized = re.search(r"\| (0\.\d+) \(v5\) \| (0\.\d+) \(blind", rows[6])
    assert realized, rows[6]
    assert float(realized.group(1)) < float(realized.group(2)) - 0.1
    # each week drew its own snapshot date
    dates = [re.match(r"\| \d \| (\S+) \|", rows[w]).group(1) for w in sorted(rows)]  # type: ignore[union-attr]
    assert dates == [
        "2026-11-01",
        "2026-11-08",
        "2026-11-15",
        "2026-11-22",
        "2026-11-29",
        "2026-12-06",
    ]
    # ... as a partition of the weekly data, each validated by its own run's contract
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        validated = instance.get_materialized_partitions(dg.AssetKey("validated_churn_data"))
    assert set(dates) <= validated, sorted(validated)
    assert f"demo home: {home}" in text and "dagster dev -w workspace.yaml" in text
    assert processes_of(home) == []  # every model server and router was stopped
