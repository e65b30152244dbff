"""The realized-performance join and per-version metrics on 10M logged predictions and 10M
outcomes (``core.performance.week_performance``): wall time and peak RSS.

Data (built once, written as Parquet, then read by a fresh child process so its peak RSS is
the join's own plus the two frames): one prediction week, 10M logged predictions of 8M
customers by two versions (70% / 30%; a quarter of the customers scored twice, the earlier
score superseded), string entity ids; 10M outcomes: one per scored customer known inside the
30-day delay, plus 2M that match nothing (customers never scored, or known after the delay).
Ids are read as Arrow strings (what a Parquet inference log gives), never as Python objects.

Timed (median of the repeats, in the child): ``week_performance`` end to end (the latest
prediction per customer and version, the join, and per version: match rate, churners, AUC
with its interval (DeLong above ``bootstrap_max_rows``), Brier, calibration error and
reliability bins, top-10% precision and recall). No slices: the frame carries no features.

Goal (issue #23): under 15 s and 4 GiB peak.

Run:  .venv/bin/python benchmarks/bench_performance.py [--rows 10000000] [--quick]
Writes benchmarks/results/bench_performance.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import _common as common  # noqa: E402

from churn_platform.core import performance as perf  # noqa: E402

WEEK = "2026-11-15"
DAY = perf.SECONDS_PER_DAY


def _ids(prefix: str, numbers: np.ndarray) -> pd.Series:
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.utf8_lpad(pa.array(numbers).cast(pa.string()), 9, "0")
    return pd.Series(pc.binary_join_element_wise(prefix, text, ""), dtype="string[pyarrow]")


def build(rows: int, folder: Path) -> dict[str, int]:
    """Write ``predictions.parquet`` and ``outcomes.parquet`` into ``folder``."""
    rng = np.random.default_rng(23)
    start, end = perf.week_bounds(WEEK)
    n_customers = int(rows * 0.8)
    twice = rows - n_customers
    customer = np.concatenate([np.arange(n_customers), rng.choice(n_customers, twice, False)])
    version = np.where(rng.random(n_customers) < 0.7, "3", "4")[customer]
    ts = start + rng.integers(3600, end - start, size=rows)
    ts[n_customers:] = ts[customer[n_customers:]] - rng.integers(60, 3600, size=twice)
    churn = rng.random(n_customers) < 0.2
    score = np.clip(0.2 + 0.25 * (churn - 0.2) + rng.normal(0, 0.15, n_customers), 0.001, 0.999)
    probability = score[customer]
    probability[n_customers:] = rng.random(twice)  # superseded scores: noise
    predictions = pd.DataFrame(
        {
            "entity_id": _ids("C", customer),
            "request_id": _ids("R", np.arange(rows)),
            "model_version": version,
            "ts": ts,
            "probability": probability,
        }
    )
    predictions.to_parquet(folder / "predictions.parquet", index=False)
    del predictions
    known = np.full(n_customers, end + 86_400 * 3) + rng.integers(0, 20 * DAY, n_customers)
    extra = rows - n_customers
    others = n_customers + np.arange(extra)  # never scored
    late_half = extra // 2
    outcome_ids = np.concatenate(
        [np.arange(n_customers), others[:late_half], np.arange(extra - late_half)]
    )
    outcome_known = np.concatenate(
        [known, known[:late_half] * 0 + end, known[: extra - late_half] + 60 * DAY]
    )
    outcomes = pd.DataFrame(
        {
            "entity_id": _ids("C", outcome_ids),
            "outcome": np.concatenate([churn, rng.random(extra) < 0.5]).astype(np.int8),
            "known_ts": outcome_known,
        }
    )
    outcomes.to_parquet(folder / "outcomes.parquet", index=False)
    return {"predictions": rows, "outcomes": len(outcomes), "customers": n_customers}


def child(folder: Path, repeats: int) -> None:
    """Read the frames, time ``week_performance``, print a JSON line."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def read(name: str) -> pd.DataFrame:
        mapper = {
            pa.string(): pd.StringDtype("pyarrow"),
            pa.large_string(): pd.StringDtype("pyarrow"),
        }
        return pq.read_table(folder / name).to_pandas(types_mapper=mapper.get, ignore_metadata=True)

    t0 = time.perf_counter()
    predictions, outcomes = read("predictions.parquet"), read("outcomes.parquet")
    read_s = time.perf_counter() - t0
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    now = perf.matures_at(WEEK, 30) + 1
    settings = perf.PerformanceSettings()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        week = perf.week_performance(predictions, outcomes, WEEK, now, settings)
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    versions = [
        {
            "version": v.model_version,
            "predictions": v.n_predictions,
            "matched": v.n_matched,
            "match_rate": v.match_rate,
            "churners": v.n_churners,
            "auc": v.auc,
            "interval": [v.auc_lower, v.auc_upper],
            "method": v.interval_method,
            "brier": v.brier,
            "ece": v.calibration_error,
            "top_precision": v.top_precision,
            "top_recall": v.top_recall,
        }
        for v in week.versions
    ]
    print(
        json.dumps(
            {
                "times": times,
                "read_s": read_s,
                "rss_loaded_gib": rss_loaded,
                "peak_gib": peak,
                "logged": week.n_logged,
                "versions": versions,
            }
        )
    )


def main(argv: list[str] | None = None) -> None:
    """Build the data, run the child, write the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="1M rows, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=common.result_path(__file__))
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.repeats)
        return
    rows = 1_000_000 if args.quick else args.rows
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory(prefix="bench_performance_") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        sizes = build(rows, folder)
        build_s = time.perf_counter() - t0
        load_before = common.load_text()
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(folder), "--repeats", str(repeats)],
            check=True,
            capture_output=True,
            text=True,
        )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    times = found["times"]
    median = float(np.median(times))
    goal_t, goal_m = median < 15.0, found["peak_gib"] < 4.0
    table = [
        "| version | predictions (one per customer) | matched | match rate | churners | AUC "
        "[interval] | Brier | calibration error | top-10% precision / recall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in found["versions"]:
        lo, hi = v["interval"]
        table.append(
            f"| {v['version']} | {v['predictions']:,} | {v['matched']:,} | "
            f"{v['match_rate']:.3f} | {v['churners']:,} | {v['auc']:.4f} [{lo:.4f}, {hi:.4f}] "
            f"({v['method']}) | {v['brier']:.4f} | {v['ece']:.4f} | "
            f"{v['top_precision']:.3f} / {v['top_recall']:.3f} |"
        )
    cmd = common.command_line(__file__, ["--quick"] if args.quick else [f"--rows {rows}"])
    lines = [
        "# Realized performance: the join and per-version metrics",
        "",
        f"Command: `{cmd}`  ",
        f"Date: {common.utc_now()}",
        "",
        f"Data: {sizes['predictions']:,} logged predictions of {sizes['customers']:,} customers "
        f"in one week, two versions; {sizes['outcomes']:,} outcomes (built and written in "
        f"{build_s:.0f} s, not timed; read back as Arrow strings in {found['read_s']:.1f} s, "
        "not timed).",
        "",
        "| what | median | all runs (s) | peak RSS of the process | goal |",
        "|---|---|---|---|---|",
        f"| `week_performance`: latest per customer and version, join, metrics of 2 versions "
        f"| {median:.2f} s | {', '.join(f'{t:.2f}' for t in times)} | {found['peak_gib']:.2f} GiB "
        f"(frames loaded: {found['rss_loaded_gib']:.2f} GiB) | < 15 s: "
        f"{'met' if goal_t else 'NOT met'}; < 4 GiB: {'met' if goal_m else 'NOT met'} |",
        "",
        *table,
        "",
        f"Machine: {common.machine(memory=True)}; load average before the timed child "
        f"{load_before}, at the end {common.load_text()}; Python {platform.python_version()}, "
        f"{common.versions_text('numpy', 'pandas', 'pyarrow', 'scikit-learn')}.",
        "",
    ]
    common.write_result(args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
