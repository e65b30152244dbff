"""Per-week time of the weekly-partitioned graph beside the unpartitioned code it replaced.

The partitioned code (this checkout: ``churn_snapshot`` and ``validated_churn_data`` are
weekly partitions, a run takes the synthetic world's next week, training reads
``CHURN_TRAINING_WEEKS`` validated weeks) is run beside the last unpartitioned commit
(``--baseline-commit``, default ``acc4855``, extracted with ``git archive`` into a temporary
folder; each run's ``PYTHONPATH`` and working directory are its own codebase only).

Each series has its own fresh temporary ``CHURN_HOME`` (synthetic source,
``CHURN_SYNTHETIC_ROWS`` = rows) and runs ``python -m churn_platform run --job retraining`` (job
``churn_retraining``: snapshot -> validated -> holdout -> challenger -> evaluation -> staging)
for ``--weeks`` consecutive weeks; each run draws the synthetic world's next week in both
codebases. Series:

* ``unpartitioned``: the baseline commit;
* ``partitioned``: this checkout, ``CHURN_TRAINING_WEEKS=1`` (the default: train on the
  run's week, as the baseline does);
* ``partitioned, N weeks``: this checkout with ``CHURN_TRAINING_WEEKS=N``
  (``--training-weeks``, default min(3, weeks); 0 or 1 leaves it out): run k trains on
  min(k, N) weeks.

The runs are interleaved (week 1 of every series, then week 2 of every series, ...) so the
machine's load falls on all of them alike. Measured per run, as in ``bench_graph.py``: wall
seconds of the subprocess, its peak RSS (``os.wait4``), the Dagster run's duration
(``RUN_START`` -> ``RUN_SUCCESS``) and each step's ``STEP_SUCCESS.duration_ms`` from the
instance under ``CHURN_HOME/dagster``, the week drawn, and ``challenger_model``'s
``n_train_rows`` / ``n_available_rows``. After the last week the series' staging servers
are stopped (``python -m churn_platform.serving stop``) and its home deleted.

Run:  .venv/bin/python benchmarks/bench_weeks.py [--quick] [--rows 200000 1000000] [--weeks 3]
Writes benchmarks/results/bench_weeks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import _common as common  # noqa: E402
import bench_graph as graph  # noqa: E402

ROOT = common.ROOT
RESULTS = common.result_path(__file__)
JOB = "retraining"
DATA_STEPS = ("churn_snapshot", "validated_churn_data", "holdout_set", "challenger_model")
# variables that would point a run at shared state or pin its weeks
CLEARED = (
    *graph.CLEARED,
    "PYTHONPATH",
    "CHURN_HOME",
    "CHURN_SYNTHETIC_AS_OF",
    "CHURN_WEEKS_START",
    "CHURN_TRAINING_WEEKS",
    "CHURN_MAX_TRAINING_ROWS",
)


@dataclass
class Series:
    """One codebase and setting, run for consecutive weeks in its own CHURN_HOME."""

    label: str
    code: Path
    extra_env: dict[str, str]
    home: Path = Path()
    runs: list[WeekRun] = field(default_factory=list)


@dataclass
class WeekRun:
    """One ``python -m churn_platform run --job retraining`` and what was measured around it."""

    week_index: int
    returncode: int | None = None
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    run_seconds: float | None = None
    steps: dict[str, float | None] = field(default_factory=dict)
    week: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    error: str = ""

    @property
    def ok(self) -> bool:
        """Whether the run exited 0."""
        return self.returncode == 0


def series_env(series: Series, rows: int) -> dict[str, str]:
    """The environment of a series' runs: its home, rows, codebase and settings only."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env["CHURN_HOME"] = str(series.home)
    env["CHURN_SYNTHETIC_ROWS"] = str(rows)
    env["PYTHONPATH"] = str(series.code)
    env.update(series.extra_env)
    return env


def run_week(series: Series, rows: int, index: int, timeout: float) -> WeekRun:
    """One run of the retraining job in ``series``' home; wall, CPU, peak RSS via wait4."""
    result = WeekRun(week_index=index, load_before=os.getloadavg())
    log = series.home / f"week{index}.log"
    cmd = [sys.executable, "-m", "churn_platform", "run", "--job", JOB]
    with log.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=str(series.code),
            env=series_env(series, rows),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        result.wall_seconds = time.perf_counter() - start
    proc.returncode = result.returncode = os.waitstatus_to_exitcode(status)
    result.peak_rss_mb = usage.ru_maxrss / 1024  # Linux: KiB
    result.cpu_seconds = usage.ru_utime + usage.ru_stime
    result.load_after = os.getloadavg()
    if not result.ok:
        text = log.read_text(errors="replace")
        result.error = "\n".join(text.strip().splitlines()[-15:])
    dagster_home = series.home / "dagster"
    try:
        steps, result.run_seconds = graph.step_durations(dagster_home)
        for step in steps:
            ms = step["duration_ms"]
            result.steps[step["step"]] = ms / 1000 if ms is not None else None
        result.week, result.training = newest_run_facts(dagster_home)
    except Exception as exc:  # the wall figures still stand without the instance's
        result.error += f"\n(could not read the instance: {type(exc).__name__}: {exc})"
    return result


def newest_run_facts(dagster_home: Path) -> tuple[str, dict[str, Any]]:
    """The newest run's week (its partition tag, if any, and the snapshot's
    ``synthetic_week``) and ``challenger_model``'s training metadata."""
    import dagster as dg

    keys = ("n_train_rows", "n_available_rows", "training_weeks", "fit_seconds", "n_iter")
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        run = instance.get_runs(limit=1)[0]
        records = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
    parts = [run.tags.get("dagster/partition", "")]
    training: dict[str, Any] = {}
    for record in records:
        mat = record.event_log_entry.asset_materialization
        if mat is None:
            continue
        name = mat.asset_key.to_user_string()
        if name == "churn_snapshot" and "synthetic_week" in mat.metadata:
            parts.append(f"synthetic week {mat.metadata['synthetic_week'].value}")
        if name == "challenger_model":
            training = {k: mat.metadata[k].value for k in keys if k in mat.metadata}
    return ", ".join(p for p in parts if p), training


def stop_servers(series: Series, rows: int) -> None:
    """Stop the staging servers the series' runs started."""
    subprocess.run(
        [sys.executable, "-m", "churn_platform.serving", "stop"],
        cwd=str(series.code),
        env=series_env(series, rows),
        capture_output=True,
        timeout=120,
    )


def baseline_copy(commit: str, into: Path) -> Path:
    """The tree of ``commit`` (the unpartitioned code) extracted under ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_size(
    rows: int,
    all_series: list[Series],
    weeks: int,
    timeout: float,
    after_run: Callable[[], object] = lambda: None,
) -> None:
    """Every series for ``weeks`` weeks at ``rows`` rows, interleaved week by week;
    ``after_run`` is called after each run (to write the results so far)."""
    for series in all_series:
        series.home = Path(tempfile.mkdtemp(prefix=f"bench-weeks-{rows}-"))
        series.runs = []
    try:
        for index in range(1, weeks + 1):
            for series in all_series:
                if series.runs and not series.runs[-1].ok:
                    continue  # a failed week leaves the next without its snapshot
                print(f"{rows:,} rows, {series.label}, week {index} ...", flush=True)
                r = run_week(series, rows, index, timeout)
                series.runs.append(r)
                print(
                    f"  exit {r.returncode}, wall {r.wall_seconds:.1f} s, Dagster run "
                    f"{graph._fmt(r.run_seconds)} s, peak RSS {r.peak_rss_mb:.0f} MB, "
                    f"{r.week}, n_train {r.training.get('n_train_rows', '-')}, load "
                    f"{common.load_text(r.load_after)}",
                    flush=True,
                )
                if r.error:
                    print(r.error, flush=True)
                after_run()
    finally:
        for series in all_series:
            with contextlib.suppress(Exception):
                stop_servers(series, rows)
            shutil.rmtree(series.home, ignore_errors=True)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def figure(run: WeekRun, what: str) -> float | None:
    """A run's figure by name: ``wall``, ``cpu``, ``run`` (Dagster), ``rss`` or a step key."""
    if what == "wall":
        return run.wall_seconds
    if what == "cpu":
        return run.cpu_seconds
    if what == "run":
        return run.run_seconds
    if what == "rss":
        return run.peak_rss_mb
    return run.steps.get(what)


FIGURES = (
    ("wall", "wall s"),
    ("cpu", "CPU s (user+sys)"),
    ("run", "Dagster run s"),
    *((step, f"`{step}` s") for step in DATA_STEPS),
    ("rss", "peak RSS MB"),
)


def render_size(rows: int, all_series: list[Series]) -> list[str]:
    """The tables of one size: every run, then the medians and ratios per figure."""
    lines = [
        "",
        f"## {rows:,} rows per week",
        "",
        "Every run (in the order they ran, series interleaved week by week):",
        "",
        "| series | run | week drawn | result | wall s | CPU s | Dagster run s | "
        + " | ".join(f"`{s}` s" for s in DATA_STEPS)
        + " | peak RSS MB | n_train rows (available) | load before -> after |",
        "|---|---:|---|---|---:|---:|---:|" + "---:|" * len(DATA_STEPS) + "---:|---:|---|",
    ]
    weeks = max((len(s.runs) for s in all_series), default=0)
    for index in range(weeks):
        for s in all_series:
            if index >= len(s.runs):
                continue
            r = s.runs[index]
            steps = " | ".join(graph._fmt(r.steps.get(k), ".2f") for k in DATA_STEPS)
            outcome = "success" if r.ok else f"FAILED (exit {r.returncode})"
            train = (
                f"{r.training['n_train_rows']:,} ({r.training.get('n_available_rows', 0):,})"
                if "n_train_rows" in r.training
                else "-"
            )
            lines.append(
                f"| {s.label} | {r.week_index} | {r.week or '-'} | {outcome} | "
                f"{r.wall_seconds:.1f} | {r.cpu_seconds:.1f} | {graph._fmt(r.run_seconds)} | "
                f"{steps} | "
                f"{r.peak_rss_mb:.0f} | {train} | {common.load_text(r.load_before)} -> "
                f"{common.load_text(r.load_after)} |"
            )
    lines += render_medians(all_series[:2])
    lines += render_last_week(all_series)
    for s in all_series:
        for r in s.runs:
            if r.error:
                lines += ["", f"{s.label}, run {r.week_index}:", "", "```", r.error, "```"]
    return lines


def render_medians(all_series: list[Series]) -> list[str]:
    """Per figure, each series' median over its successful weeks and the ratio to the first."""
    base = all_series[0]
    lines = [
        "",
        f"Median over the weeks (successful runs), and each series / `{base.label}`:",
        "",
        "| figure | "
        + " | ".join(s.label for s in all_series)
        + " | "
        + " | ".join(f"{s.label} / {base.label}" for s in all_series[1:])
        + " |",
        "|---|" + "---:|" * (2 * len(all_series) - 1),
    ]
    for key, name in FIGURES:
        medians = [_median([figure(r, key) for r in s.runs if r.ok]) for s in all_series]
        spec = ".0f" if key == "rss" else ".2f"
        cells = [graph._fmt(m, spec) for m in medians]
        ratios = [
            f"**{m / medians[0]:.2f}x**" if m is not None and medians[0] else "n/a"
            for m in medians[1:]
        ]
        lines.append(f"| {name} | " + " | ".join(cells + ratios) + " |")
    return lines


def render_last_week(all_series: list[Series]) -> list[str]:
    """The last week of every series side by side (the multi-week series trains on its
    whole window only then), with the ratio of each to the first series."""
    last = [s.runs[-1] if s.runs and s.runs[-1].ok else None for s in all_series]
    if len(all_series) < 3 or last[0] is None:
        return []
    base = all_series[0]
    index = last[0].week_index
    lines = [
        "",
        f"Run {index} alone (the multi-week series trains on its whole window only from its "
        f"run {index}), and each series / `{base.label}`:",
        "",
        "| figure | "
        + " | ".join(s.label for s in all_series)
        + " | "
        + " | ".join(f"{s.label} / {base.label}" for s in all_series[1:])
        + " |",
        "|---|" + "---:|" * (2 * len(all_series) - 1),
    ]
    for key, name in FIGURES:
        values = [figure(r, key) if r and r.week_index == index else None for r in last]
        spec = ".0f" if key == "rss" else ".2f"
        ratios = [
            f"**{v / values[0]:.2f}x**" if v is not None and values[0] else "n/a"
            for v in values[1:]
        ]
        lines.append(
            f"| {name} | " + " | ".join([graph._fmt(v, spec) for v in values] + ratios) + " |"
        )
    rows = [
        f"{r.training['n_train_rows']:,}" if r and "n_train_rows" in r.training else "-"
        for r in last
    ]
    lines.append("| n_train rows | " + " | ".join(rows) + " |" + " |" * (len(last) - 1))
    return lines


def render(sizes: dict[int, list[Series]], args: argparse.Namespace, command: str) -> str:
    """The whole results file."""
    lines = [
        "# Weekly partitions: per-week time of `python -m churn_platform run --job retraining`, "
        "partitioned vs unpartitioned",
        "",
        f"- date: {common.utc_now()}",
        f"- command: `{command}`",
        f"- machine: {common.machine(memory=True)}; load average per run below (other "
        "benchmarks and tests ran on the machine at the same time)",
        f"- python {platform.python_version()}, "
        + common.versions_text("dagster", "mlflow", "scikit-learn", "pandas", "numpy", "pyarrow"),
        f"- unpartitioned: commit `{args.baseline_commit}` (`git archive`), partitioned: this "
        "checkout; each run's `PYTHONPATH` and working directory are its codebase only",
        f"- each series: a fresh temporary `CHURN_HOME`, synthetic source, "
        f"`CHURN_SYNTHETIC_ROWS`=rows, job `churn_retraining` (snapshot -> validated -> "
        f"holdout -> challenger -> evaluation -> staging) run {args.weeks} times; each run "
        "draws the synthetic world's next week; the series run interleaved (week 1 of each, "
        "then week 2 of each, ...). Run 1 has no champion; later runs compare with the "
        "champion the first promoted.",
        "- step seconds: `STEP_SUCCESS.duration_ms` from the run's Dagster event log; "
        "Dagster run s: `RUN_START` -> `RUN_SUCCESS`; wall s adds interpreter start-up, "
        "imports, loading the definitions and the summary; peak RSS: `ru_maxrss` of the run "
        "process (`os.wait4`), staging servers not included. n_train rows: "
        "`challenger_model`'s `n_train_rows` (and `n_available_rows`: the training weeks' "
        "non-holdout rows; the default `max_training_rows` caps the fit at 1,000,000).",
    ]
    for rows, all_series in sizes.items():
        lines += render_size(rows, all_series)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run every size's series, then write the markdown results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=None, help="rows per week")
    parser.add_argument("--quick", action="store_true", help="50k rows, 2 weeks")
    parser.add_argument("--weeks", type=int, default=None, help="runs per series (default 3)")
    parser.add_argument(
        "--training-weeks",
        type=int,
        default=None,
        help="CHURN_TRAINING_WEEKS of the multi-week series (default: min(3, weeks); 0 or 1: none)",
    )
    parser.add_argument("--baseline-commit", default="acc4855", help="the unpartitioned code")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes_wanted = args.rows or ([50_000] if args.quick else [200_000, 1_000_000])
    args.weeks = args.weeks or (2 if args.quick else 3)
    if args.training_weeks is None:
        args.training_weeks = min(3, args.weeks)
    command = common.command_line(__file__)
    with tempfile.TemporaryDirectory(prefix="bench-weeks-code-") as tmp:
        baseline = baseline_copy(args.baseline_commit, Path(tmp) / "unpartitioned")
        sizes: dict[int, list[Series]] = {}
        for rows in sizes_wanted:
            all_series = [
                Series("unpartitioned", baseline, {}),
                Series("partitioned", ROOT, {"CHURN_TRAINING_WEEKS": "1"}),
            ]
            if args.training_weeks > 1:
                n = args.training_weeks
                all_series.append(
                    Series(f"partitioned, {n} weeks", ROOT, {"CHURN_TRAINING_WEEKS": str(n)})
                )
            sizes[rows] = all_series
            # written after every run, so a run cut short loses none before it
            run_size(
                rows,
                all_series,
                args.weeks,
                args.timeout,
                lambda: common.write_result(args.out, render(sizes, args, command), echo=False),
            )
    common.write_result(args.out, render(sizes, args, command), announce=True)


if __name__ == "__main__":
    main()
