"""``python -m churn_platform run`` without ``--verbose``: a line per step as it starts and
ends, with its duration; no Dagster beta warnings, no MLflow schema hints."""

from __future__ import annotations

import re
from pathlib import Path

from churn_platform_tests.test_cli import home, run_cli  # noqa: F401 - home is a fixture

STEPS = ["churn_snapshot", "validated_churn_data", "holdout_set", "challenger_model"]


def test_run_prints_steps_with_durations_and_no_developer_warnings(home: Path) -> None:  # noqa: F811
    done = run_cli(home, "--job", "churn_retraining", CHURN_SYNTHETIC_ROWS="2000")
    out, err = done.stdout, done.stderr
    assert "Traceback" not in out + err, out + err
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("step ")]
    for step in STEPS:  # each step: started, then ended with its duration, in that order
        started = lines.index(f"step {step} started")
        ended = next(
            i
            for i, line in enumerate(lines)
            if re.fullmatch(rf"step {step} (succeeded in|FAILED after) \d+\.\d s", line)
        )
        assert started < ended, lines
    # the run's order: a step ends before the next one starts (in-process executor)
    assert lines.index("step churn_snapshot started") < lines.index("step holdout_set started")
    # the progress comes before the summary
    assert out.index("step churn_snapshot started") < out.index("\nrun ")
    for noise in ("BetaWarning", "is currently in beta", "Hint: Inferred schema"):
        assert noise not in out + err, f"{noise!r} printed:\n{err}"
