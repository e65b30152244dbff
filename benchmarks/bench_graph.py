"""Wall time and peak memory of the whole asset graph (job ``churn_end_to_end``).

Each size runs ``python -m churn_platform run`` (the main job: snapshot -> contract ->
holdout -> challenger -> evaluation -> staging -> production) as a subprocess in a fresh
temporary ``CHURN_HOME`` with ``CHURN_SYNTHETIC_ROWS`` set, so every run is a first run
(no champion: the gate promotes, production is a first deployment without a canary window).

Measured per run:
* wall time of the subprocess (``time.perf_counter`` around it);
* peak RSS and CPU seconds from ``os.wait4`` on that subprocess: the kernel's
  ``RUSAGE_CHILDREN`` accounting (what ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``
  reports), but for this one child, so sizes run in one process do not mask each other.
  The model servers and routers the run starts are detached (own session, never waited
  for) and are NOT in this figure; their own peak RSS (``VmHWM``) is read from ``/proc``
  before they are stopped and reported separately;
* per-step durations from the Dagster instance under ``CHURN_HOME/dagster``
  (``STEP_SUCCESS`` ``duration_ms`` and the step start/end event times).

After each run the servers are stopped (``python -m churn_platform.serving stop`` with that
``CHURN_HOME``) and the temporary home is deleted (``--keep`` keeps it).

There is no peer tool for "the whole graph": the figures are absolute, plus the scaling
ratio between the sizes.

Each run's resident memory is also sampled every 0.25 s, so every step gets its own peak; the
data assets' ``timings_s`` metadata splits the data steps into their parts, and the issue's
goals (peak RSS < 8 GiB, whole graph < 10 min, data steps < 60 s) are reported as PASS/FAIL.

Run:  .venv/bin/python benchmarks/bench_graph.py [--quick] [--rows 100000 1000000 10000000]
Writes benchmarks/results/bench_graph.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import _common as common  # noqa: E402

ROOT = common.ROOT
RESULTS = common.result_path(__file__)
JOB = "churn_end_to_end"
RSS_SAMPLE_SECONDS = 0.25
# the issue's goals for one run on the benchmark machine (2 cores, 24 GiB)
GOAL_PEAK_RSS_MB = 8 * 1024
GOAL_WALL_SECONDS = 600.0
GOAL_DATA_SECONDS = 60.0
# the data steps whose in-process timings make up the "data steps" goal
DATA_PARTS = {
    "churn_snapshot": ("map", "data_version"),
    "validated_churn_data": ("contract", "validate"),
}
# variables that would point a run at shared state instead of its fresh CHURN_HOME
CLEARED = (
    "DAGSTER_HOME",
    "MLFLOW_TRACKING_URI",
    "PROMETHEUS_URL",
    "CHURN_SOURCE",
    "CHURN_SOURCE_PATH",
    "CHURN_MAPPING_FILE",
    "CHURN_STAGING_PORT",
    "CHURN_PRODUCTION_PORT",
    "CHURN_FAULT_RATE",
    "CHURN_AUTO_RELEASE",
    "CHURN_ENV",
)


@dataclass
class GraphRun:
    """One ``python -m churn_platform run`` and what was measured around it."""

    rows: int
    returncode: int | None = None
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    timed_out: bool = False
    summary: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    run_seconds: float | None = None  # Dagster's RUN_START -> RUN_SUCCESS/FAILURE
    servers: list[dict[str, Any]] = field(default_factory=list)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    error: str = ""
    rss_samples: list[tuple[float, float]] = field(default_factory=list)  # (epoch s, MB)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)  # asset -> part -> s


def run_env(home: Path, rows: int) -> dict[str, str]:
    """The environment of one run: a fresh CHURN_HOME and the synthetic row count."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env["CHURN_HOME"] = str(home)
    env["CHURN_SYNTHETIC_ROWS"] = str(rows)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_graph(rows: int, home: Path, timeout: float) -> GraphRun:
    """Run the job as a subprocess; wall time, peak RSS and CPU time via ``os.wait4``."""
    result = GraphRun(rows=rows, load_before=os.getloadavg())
    log = home / "run.log"
    cmd = [sys.executable, "-m", "churn_platform", "run", "--job", JOB]
    with log.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=str(ROOT),
            env=run_env(home, rows),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def kill() -> None:
            result.timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        done = threading.Event()
        sampler = threading.Thread(
            target=_sample_rss, args=(proc.pid, done, result.rss_samples), daemon=True
        )
        sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            done.set()
            sampler.join()
        result.wall_seconds = time.perf_counter() - start
    proc.returncode = result.returncode = os.waitstatus_to_exitcode(status)
    result.peak_rss_mb = usage.ru_maxrss / 1024  # Linux: KiB
    result.cpu_seconds = usage.ru_utime + usage.ru_stime
    result.load_after = os.getloadavg()
    text = log.read_text(errors="replace")
    lines = text.splitlines()
    first = max(
        (i for i, line in enumerate(lines) if re.match(r"run \S+: (SUCCESS|FAILED)", line)),
        default=len(lines),
    )
    result.summary = [lines[first]] if first < len(lines) else []
    for line in lines[first + 1 :]:
        if not line.startswith("  "):
            break
        result.summary.append(line.strip())
    if result.returncode != 0:
        result.error = "\n".join(text.strip().splitlines()[-15:])
    return result


def _sample_rss(pid: int, done: threading.Event, out: list[tuple[float, float]]) -> None:
    """Every 0.25 s, the run process's resident memory (``VmRSS``) with the epoch time, so
    each step's peak can be read from the samples within its start and end."""
    while not done.wait(RSS_SAMPLE_SECONDS):
        kib = _proc_kib(pid, "VmRSS")
        if kib is None:
            return
        out.append((time.time(), kib / 1024))


def step_peak_rss(run: GraphRun, step: dict[str, Any]) -> float | None:
    """Highest sampled RSS (MB) between a step's start and end event (None: no sample)."""
    start, end = step.get("start"), step.get("end")
    if start is None or end is None:
        return None
    inside = [mb for t, mb in run.rss_samples if start <= t <= end]
    return max(inside) if inside else None


def asset_timings(dagster_home: Path) -> dict[str, dict[str, float]]:
    """The ``timings_s`` metadata of each asset materialised by the newest run: the data
    assets time their parts (loading and mapping, data version, contract, ...) in-process."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs(limit=1)
        if not runs:
            return {}
        records = instance.get_records_for_run(
            runs[0].run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
    out: dict[str, dict[str, float]] = {}
    for record in records:
        mat = record.event_log_entry.asset_materialization
        if mat is None or "timings_s" not in mat.metadata:
            continue
        value = mat.metadata["timings_s"].value
        if isinstance(value, dict):
            out[mat.asset_key.to_user_string()] = {k: float(v) for k, v in value.items()}
    return out


def step_durations(dagster_home: Path) -> tuple[list[dict[str, Any]], float | None]:
    """Per step: start offset, end - start and Dagster's ``duration_ms``, from the run's
    event log; and the whole run's duration (RUN_START -> RUN_SUCCESS/FAILURE)."""
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs(limit=1)
        if not runs:
            return [], None
        events = instance.all_logs(runs[0].run_id)
    run_start = run_end = None
    starts: dict[str, float] = {}
    steps: dict[str, dict[str, Any]] = {}
    for entry in events:
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type
        if kind == DagsterEventType.RUN_START:
            run_start = entry.timestamp
        elif kind in (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE):
            run_end = entry.timestamp
        elif kind == DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            key = event.step_key
            duration_ms = None
            if kind == DagsterEventType.STEP_SUCCESS:
                duration_ms = event.event_specific_data.duration_ms
            steps[key] = {
                "step": key,
                "status": "success" if kind == DagsterEventType.STEP_SUCCESS else "failure",
                "start": starts.get(key),
                "end": entry.timestamp,
                "duration_ms": duration_ms,
            }
    origin = run_start or min((s["start"] for s in steps.values() if s["start"]), default=0.0)
    out = []
    for s in sorted(steps.values(), key=lambda s: s["start"] or 0.0):
        s["offset_s"] = (s["start"] - origin) if s["start"] else None
        s["event_s"] = (s["end"] - s["start"]) if s["start"] else None
        out.append(s)
    total = (run_end - run_start) if run_start and run_end else None
    return out, total


def _pids(status: Any) -> list[tuple[str, int]]:
    """(what, pid) for every process in ``serving status`` JSON."""
    found = []
    for env, data in (status or {}).items():
        router = data.get("router")
        if router and router.get("pid"):
            found.append((f"{env} router", int(router["pid"])))
        for version, rec in (data.get("versions") or {}).items():
            if rec.get("pid"):
                found.append((f"{env} model v{version}", int(rec["pid"])))
    return found


def _proc_kib(pid: int, field_name: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def servers_then_stop(home: Path, rows: int) -> list[dict[str, Any]]:
    """Peak RSS of each detached server the run left running; then stop them all."""
    env = run_env(home, rows)
    serving = [sys.executable, "-m", "churn_platform.serving"]
    out = subprocess.run(
        [*serving, "status"], cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=60
    )
    servers = []
    try:
        status = json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else {}
    except json.JSONDecodeError:
        status = {}
    for what, pid in _pids(status):
        hwm, rss = _proc_kib(pid, "VmHWM"), _proc_kib(pid, "VmRSS")
        servers.append(
            {
                "what": what,
                "pid": pid,
                "peak_rss_mb": hwm / 1024 if hwm else None,
                "rss_mb": rss / 1024 if rss else None,
            }
        )
    subprocess.run([*serving, "stop"], cwd=str(ROOT), env=env, capture_output=True, timeout=120)
    return servers


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def render(runs: list[GraphRun], args: argparse.Namespace, command: str) -> str:
    lines = [
        "# Whole-graph benchmark: `python -m churn_platform run` (job `churn_end_to_end`)",
        "",
        f"- date: {common.utc_now()}",
        f"- command: `{command}`",
        f"- machine: {common.machine(memory=True)}; load average per run below",
        f"- python {platform.python_version()}, "
        + common.versions_text("dagster", "mlflow", "scikit-learn", "pandas", "numpy", "pyarrow"),
        f"- each run: fresh temporary `CHURN_HOME`, `CHURN_SYNTHETIC_ROWS`=rows, synthetic "
        f"source, local target, metrics scraped from the servers (no `PROMETHEUS_URL`); "
        f"timeout {args.timeout:.0f} s per run. A first run: no champion yet, so the gate "
        "promotes and production is a first deployment (health check, straight to 100%, no "
        "canary window).",
        "",
        "| rows | result | wall s | CPU s (user+sys) | peak RSS of the run, MB | "
        "Dagster run s | load before | load after |",
        "|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for r in runs:
        outcome = (
            "TIMED OUT (killed)"
            if r.timed_out
            else ("success" if r.returncode == 0 else f"FAILED (exit {r.returncode})")
        )
        lines.append(
            f"| {r.rows:,} | {outcome} | {r.wall_seconds:.1f} | {r.cpu_seconds:.1f} | "
            f"{r.peak_rss_mb:.0f} | {_fmt(r.run_seconds)} | {common.load_text(r.load_before)} | "
            f"{common.load_text(r.load_after)} |"
        )
    done = [r for r in runs if r.returncode == 0]
    if len(done) >= 2:
        small, large = done[0], done[-1]
        lines += [
            "",
            f"Scaling {small.rows:,} -> {large.rows:,} rows ({large.rows / small.rows:.0f}x the "
            f"data): wall time **{large.wall_seconds / small.wall_seconds:.2f}x**, CPU time "
            f"{large.cpu_seconds / small.cpu_seconds:.2f}x, peak RSS "
            f"**{large.peak_rss_mb / small.peak_rss_mb:.2f}x**.",
        ]
    lines += [
        "",
        "Peak RSS is `ru_maxrss` of the `python -m churn_platform run` process (from "
        "`os.wait4`, the same kernel accounting as `getrusage(RUSAGE_CHILDREN)`): the Dagster "
        "run executes in process, so this covers every asset's computation. It does **not** "
        "include the model servers and routers the run starts: they are detached (own "
        "session, never waited for). Their own peak RSS (`VmHWM`), read just before "
        "`python -m churn_platform.serving stop`:",
        "",
        "| rows | process | peak RSS MB |",
        "|---:|---|---:|",
    ]
    for r in runs:
        for s in r.servers:
            lines.append(f"| {r.rows:,} | {s['what']} | {_fmt(s['peak_rss_mb'], '.0f')} |")
        if r.servers:
            total = sum(s["peak_rss_mb"] or 0 for s in r.servers)
            lines.append(f"| {r.rows:,} | all servers (sum of peaks) | {total:.0f} |")
    keys: list[str] = []
    for r in runs:
        keys += [s["step"] for s in r.steps if s["step"] not in keys]
    if keys:
        header = " | ".join(f"{r.rows:,} rows: s (starts at s), peak RSS" for r in runs)
        lines += [
            "",
            "Per step, from the run's Dagster event log (`STEP_SUCCESS.duration_ms`; the start "
            "offset is from `RUN_START`); the peak RSS is the highest `VmRSS` of the run "
            f"process sampled every {RSS_SAMPLE_SECONDS} s while the step ran. The rest of the wall time is interpreter start-up, "
            "imports, loading the definitions and the summary. `challenger_model` fits "
            "HistGradientBoosting (at most 200 iterations, 2 OpenMP threads; early stopping "
            "from 100,000 fitted rows) on the non-holdout rows (80%), capped by the default "
            "`max_training_rows` of 1,000,000 (a stratified sample), runs the model checks on "
            "every holdout row and logs it to MLflow; "
            "`evaluation_report` scores the 20% holdout (a first run has no champion, so no "
            "paired bootstrap); the two deployment steps start servers and probe them, so they "
            "do not grow with the data.",
            "",
            f"| step | {header} |" + (" ratio |" if len(runs) == 2 else ""),
            "|---|" + "---:|" * len(runs) + ("---:|" if len(runs) == 2 else ""),
        ]
        for key in keys:
            cells, values = [], []
            for r in runs:
                step = next((s for s in r.steps if s["step"] == key), None)
                if step is None:
                    cells.append("-")
                    values.append(None)
                    continue
                seconds = (
                    step["duration_ms"] / 1000
                    if step["duration_ms"] is not None
                    else step["event_s"]
                )
                values.append(seconds)
                flag = "" if step["status"] == "success" else " FAILED"
                peak = step_peak_rss(r, step)
                cells.append(
                    f"{_fmt(seconds, '.2f')} ({_fmt(step['offset_s'], '.1f')}), "
                    f"{_fmt(peak, '.0f')} MB{flag}"
                )
            ratio = ""
            if len(runs) == 2:
                a, b = values
                ratio = f" {b / a:.1f}x |" if a and b else " - |"
            lines.append(f"| `{key}` | " + " | ".join(cells) + " |" + ratio)
    lines += render_data_parts(runs)
    lines += render_goals(runs)
    for r in runs:
        if r.summary:
            lines += ["", f"Summary printed by the {r.rows:,}-row run:", "", "```"]
            lines += r.summary[:4]  # the rest names the deleted temporary home
            lines.append("```")
        if r.error:
            lines += ["", f"Tail of the {r.rows:,}-row run's output:", "", "```", r.error, "```"]
    return "\n".join(lines) + "\n"


def data_seconds(run: GraphRun) -> float | None:
    """Mapping, data version, contract and typing, in-process (None: not recorded)."""
    parts = [
        run.timings.get(asset, {}).get(part)
        for asset, names in DATA_PARTS.items()
        for part in names
    ]
    return None if any(p is None for p in parts) else sum(p for p in parts if p is not None)


def render_data_parts(runs: list[GraphRun]) -> list[str]:
    """The data assets' own timings (``timings_s`` metadata), one row per part."""
    parts = [(a, p) for r in runs for a, t in r.timings.items() for p in t]
    parts = list(dict.fromkeys(parts))
    if not parts:
        return []
    lines = [
        "",
        "Inside the data steps, from each asset's `timings_s` metadata (seconds, measured "
        "in-process around each part). The data-steps goal counts "
        + ", ".join(f"`{a}.{p}`" for a, names in DATA_PARTS.items() for p in names)
        + "; the rest (drawing the synthetic rows, writing Parquet, the quality report) is "
        "in the step durations above.",
        "",
        "| part | " + " | ".join(f"{r.rows:,} rows" for r in runs) + " |",
        "|---|" + "---:|" * len(runs),
    ]
    for asset, part in parts:
        cells = [_fmt(r.timings.get(asset, {}).get(part), ".2f") for r in runs]
        lines.append(f"| `{asset}.{part}` | " + " | ".join(cells) + " |")
    return lines


def render_goals(runs: list[GraphRun]) -> list[str]:
    """The issue's goals per run, each PASS or FAIL with the measured value."""

    def verdict(value: float | None, bound: float) -> str:
        if value is None:
            return "n/a"
        return f"{'PASS' if value < bound else 'FAIL'} ({value:,.1f})"

    lines = [
        "",
        f"Goals (issue 16): peak RSS of the run < {GOAL_PEAK_RSS_MB:,} MB, whole graph "
        f"(wall) < {GOAL_WALL_SECONDS:.0f} s, data steps (mapping, data version, contract) "
        f"< {GOAL_DATA_SECONDS:.0f} s together. A failed or timed-out run fails every goal.",
        "",
        "| rows | peak RSS MB | wall s | data steps s |",
        "|---:|---|---|---|",
    ]
    for r in runs:
        ok = r.returncode == 0 and not r.timed_out
        rss = verdict(r.peak_rss_mb, GOAL_PEAK_RSS_MB) if ok else "FAIL (run failed)"
        wall = verdict(r.wall_seconds, GOAL_WALL_SECONDS) if ok else "FAIL (run failed)"
        data = verdict(data_seconds(r), GOAL_DATA_SECONDS) if ok else "FAIL (run failed)"
        lines.append(f"| {r.rows:,} | {rss} | {wall} | {data} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    """Run each size, then write the markdown results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=None, help="sizes to run")
    parser.add_argument("--quick", action="store_true", help="20k and 100k rows only")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary CHURN_HOMEs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes = args.rows or ([20_000, 100_000] if args.quick else [100_000, 1_000_000])
    command = common.command_line(__file__)

    runs = []
    for rows in sizes:
        home = Path(tempfile.mkdtemp(prefix=f"bench-graph-{rows}-"))
        print(f"{rows:,} rows: running {JOB} in {home} ...", flush=True)
        try:
            r = run_graph(rows, home, args.timeout)
            try:
                r.steps, r.run_seconds = step_durations(home / "dagster")
                r.timings = asset_timings(home / "dagster")
            except Exception as exc:  # the figures above still stand without the steps
                r.error += f"\n(could not read the step durations: {type(exc).__name__}: {exc})"
            r.servers = servers_then_stop(home, rows)
        finally:
            if not args.keep:
                shutil.rmtree(home, ignore_errors=True)
        runs.append(r)
        print(
            f"{rows:,} rows: exit {r.returncode}{' (timed out)' if r.timed_out else ''}, "
            f"wall {r.wall_seconds:.1f} s, CPU {r.cpu_seconds:.1f} s, peak RSS "
            f"{r.peak_rss_mb:.0f} MB, load {common.load_text(r.load_after)}",
            flush=True,
        )
    runs.sort(key=lambda r: r.rows)  # the tables read small to large whatever the run order
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"(getrusage(RUSAGE_CHILDREN).ru_maxrss over all runs: {children:.0f} MB)")
    text = render(runs, args, command)
    common.write_result(args.out, text, announce=True)


if __name__ == "__main__":
    main()
