"""Time ``spec infer`` on 1M rows x 25 columns against GX's profiling metrics, and the spec's
data contract on the same table against Great Expectations running the same rules.

Run from the repository root:

    .venv/bin/python benchmarks/bench_spec.py [--rows 1000000] [--repeats 3] [--quick]

The table is generated here: an id, a yes/no target, seven categoricals (2 to 20 levels),
three flags (yes/no, true/false, 0/1), ten numeric columns stored as text (five with 1-5%
blank cells), an hour, a date and a free-text email column, every cell text as a CSV export
holds it. It is written to a temporary Parquet file (and CSV), which each measured tool
reads in its own process, so the peak RSS of each process is its own.

What each row measures:
* ours, in process: ``core.spec_starter.infer_spec_text`` on the in-memory table (kinds on a
  sample of distinct values, ranges / null rates / allowed sets on a full pass).
* ours, the command: ``python -m churn_platform spec infer table.parquet|csv -o spec.yaml``
  end to end (start-up, reading the file as the data source does, inference, writing).
* GX column descriptive metrics (``MetricListMetricRetriever``, every ``MetricTypes``: row
  count, column types, min/max/mean/median, null and non-null counts, unique proportion),
  the closest GX 1.x has to a profiler (the rule-based profiler and DataAssistants were
  removed in GX 1.0). It gets the table already typed (numbers as floats, its best case): it
  cannot read numbers stored as text, decide kinds, recognise a target or write a spec.
* TFDV (``infer_schema``) is not run: it needs TensorFlow, which is not in this project's
  environment (``pip install tensorflow-data-validation`` pulls ~1 GB); said in the results.

Then the contract: the inferred spec's rules through ``evaluate_contract(frame, spec=spec)``
against the same rules as a GX expectation suite built from the spec (not-null and unique
id, ranges, allowed sets, null-rate limits as ``mostly``, row count), on the mapped table
with injected defects; the ratio is GX time / ours. Results: ``benchmarks/results/bench_spec.md``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import _common as common  # noqa: E402

from churn_platform.core import contract  # noqa: E402
from churn_platform.core.mapping import apply_mapping  # noqa: E402
from churn_platform.core.spec import Spec  # noqa: E402
from churn_platform.core.spec_starter import infer_spec_text  # noqa: E402

RESULTS = common.result_path(__file__)
ID, TARGET = "customer_ref", "churned"
CATEGORIES: dict[str, int] = {
    "plan": 3,
    "region": 8,
    "channel": 4,
    "segment": 5,
    "payment": 4,
    "device": 3,
    "country": 20,
}
# numeric columns stored as text: (kind, blank share)
NUMBERS: dict[str, tuple[str, float]] = {
    "monthly_fee": ("float", 0.02),
    "usage_gb": ("float", 0.05),
    "tickets": ("int", 0.01),
    "tenure_months": ("int", 0.0),
    "seats": ("int", 0.0),
    "discount": ("float", 0.0),
    "late_days": ("int", 0.03),
    "sessions": ("int", 0.0),
    "nps": ("int", 0.02),
    "rating": ("float", 0.0),
}


def make_table(rows: int, seed: int = 1) -> pd.DataFrame:
    """25 text columns of ``rows`` rows (see the module docstring)."""
    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {ID: np.char.add("C", np.arange(rows).astype(str)).astype(object)}
    for name, levels in CATEGORIES.items():
        labels = np.array([f"{name}_{i}" for i in range(levels)], dtype=object)
        cols[name] = labels[rng.integers(0, levels, rows)]
    cols["auto_pay"] = np.array(["no", "yes"], dtype=object)[rng.integers(0, 2, rows)]
    cols["paperless"] = np.array(["false", "true"], dtype=object)[rng.integers(0, 2, rows)]
    cols["is_business"] = np.array(["0", "1"], dtype=object)[rng.integers(0, 2, rows)]
    for name, (kind, blank) in NUMBERS.items():
        if kind == "float":
            values = np.round(rng.gamma(2.0, 30.0, rows), 2).astype(str).astype(object)
        else:
            values = rng.poisson(12, rows).astype(str).astype(object)
        if blank:
            values[rng.random(rows) < blank] = ""
        cols[name] = values
    cols["login_hour"] = rng.integers(0, 24, rows).astype(str).astype(object)
    days = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 2000, rows), unit="D")
    cols["signup_date"] = days.strftime("%Y-%m-%d").to_numpy(dtype=object)
    cols["email"] = np.char.add(np.arange(rows).astype(str), "@mail.example").astype(object)
    cols[TARGET] = np.array(["no", "yes"], dtype=object)[(rng.random(rows) < 0.2).astype(int)]
    return pd.DataFrame(cols)


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The table with numbers as floats and dates as datetimes (GX's best case)."""
    out = frame.copy()
    for name in [*NUMBERS, "login_hour"]:
        out[name] = pd.to_numeric(out[name].replace("", np.nan), errors="coerce")
    out["signup_date"] = pd.to_datetime(out["signup_date"])
    return out


# -- child processes: one tool each, so each peak RSS is its own ------------------------------


def child_ours(data: Path) -> dict[str, float]:
    """Load the Parquet file and infer (the load is not timed)."""
    frame = pd.read_parquet(data)
    start, cpu = time.perf_counter(), time.process_time()
    infer_spec_text(frame, target=TARGET, id_column=ID)
    return {"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu}


def gx_context() -> Any:
    """An ephemeral GX context without progress bars."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def child_gx(data: Path) -> dict[str, float]:
    """Load, type (not timed), then GX's column descriptive metrics over every column."""
    from great_expectations.experimental.metric_repository.metric_list_metric_retriever import (
        MetricListMetricRetriever,
    )
    from great_expectations.experimental.metric_repository.metrics import MetricTypes

    frame = typed(pd.read_parquet(data))
    context = gx_context()
    asset = context.data_sources.add_pandas("bench").add_dataframe_asset("table")
    request = asset.build_batch_request(options={"dataframe": frame})
    start, cpu = time.perf_counter(), time.process_time()
    metrics = MetricListMetricRetriever(context).get_metrics(
        batch_request=request, metric_list=list(MetricTypes)
    )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    failed = sum(1 for m in metrics if m.exception is not None)
    return {"seconds": seconds, "cpu": cpu, "metrics": len(metrics), "failed": failed}


# A small launcher runs each measured command: a child forked from this (large) process
# would report this process's RSS as its own peak (Linux keeps the pre-exec high-water mark),
# while the launcher's own child starts from the launcher's few MiB.
_LAUNCHER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "open(sys.argv[1], 'w').write(f'{u.ru_maxrss} {u.ru_utime + u.ru_stime}')\n"
    "sys.exit(code)\n"
)


def measured(cmd: list[str]) -> tuple[float, float, str, float]:
    """Run ``cmd`` through the launcher: wall seconds, peak RSS in MiB, stdout, CPU seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp) / "rss"
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-S", "-c", _LAUNCHER, str(rss_file), *cmd],
            capture_output=True,
            text=True,
            cwd=common.ROOT,
        )
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{cmd} failed: {done.stderr[-2000:]}")
        rss, cpu = rss_file.read_text().split()
        return seconds, int(rss) / 1024, done.stdout, float(cpu)


# -- the contract, ours and GX's ---------------------------------------------------------------


def spec_aware_contract() -> bool:
    """True when ``evaluate_contract`` takes the spec (branch s-contract merged)."""
    return "spec" in inspect.signature(contract.evaluate_contract).parameters


def inject_defects(raw: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    """100 duplicated ids, 50 out-of-range values in two numeric columns, 30 unknown labels."""
    out = raw.copy()
    n = len(out)
    out.loc[out.index[1:101], ID] = out.loc[out.index[0], ID]
    numbers = [c for c in spec.of_kind("numeric", "integer") if spec.features[c].range][:2]
    for column in numbers:
        high = spec.features[column].range[1]  # type: ignore[index]
        out.loc[out.index[np.arange(5, n, n // 50)[:50]], column] = str((high or 0) + 1000)
    categorical = spec.of_kind("categorical")[0]
    out.loc[out.index[np.arange(7, n, n // 30)[:30]], categorical] = "unheard_of"
    return out


def gx_suite_from_spec(spec: Spec) -> tuple[Any, list[Any]]:
    """The spec's contract rules as GX 1.x expectations (same bounds, same sets)."""
    import great_expectations as gx

    e = gx.expectations
    items = [
        e.ExpectTableRowCountToBeBetween(min_value=spec.dataset.min_rows),
        e.ExpectColumnValuesToNotBeNull(column=spec.id_column),
        e.ExpectColumnValuesToBeUnique(column=spec.id_column),
        e.ExpectColumnValuesToBeInSet(column=spec.target_column, value_set=[0, 1]),
    ]
    for name, feature in spec.features.items():
        if feature.range is not None:
            low, high = feature.range
            items.append(
                e.ExpectColumnValuesToBeBetween(column=name, min_value=low, max_value=high)
            )
        if feature.mean_range is not None:
            low, high = feature.mean_range
            items.append(e.ExpectColumnMeanToBeBetween(column=name, min_value=low, max_value=high))
        if feature.allowed is not None:
            items.append(
                e.ExpectColumnValuesToBeInSet(column=name, value_set=list(feature.allowed))
            )
        limit = spec.null_rate_limit(name)
        items.append(e.ExpectColumnValuesToNotBeNull(column=name, mostly=max(1e-9, 1 - limit)))
    suite = gx.ExpectationSuite(name="spec_contract")
    for item in items:
        suite.add_expectation(item)
    return suite, items


def contract_rows(raw: pd.DataFrame, spec: Spec, repeats: int, ge_repeats: int) -> list[str]:
    """The contract comparison's markdown lines (or why it did not run)."""
    if not spec_aware_contract():
        return [
            "Contract comparison not run: this build's `evaluate_contract` does not take a spec "
            "yet (branch s-contract)."
        ]
    bad = inject_defects(raw, spec)
    map_time, _, mapped = common.timed(lambda: apply_mapping(bad, spec=spec), 1)
    frame = mapped.frame

    def ours() -> dict[str, int]:
        results = contract.evaluate_contract(mapped, spec=spec)
        return {r.name: r.failing_rows for r in results if not r.passed}

    def ours_by_column() -> dict[str, int]:
        results = contract.evaluate_contract(mapped, spec=spec)
        return {str(r.column): r.failing_rows for r in results if not r.passed}

    context = gx_context()
    batch_definition = (
        context.data_sources.add_pandas("bench")
        .add_dataframe_asset("table")
        .add_batch_definition_whole_dataframe("all")
    )
    suite, items = gx_suite_from_spec(spec)
    suite = context.suites.add(suite)
    strings = [c for c, d in spec.dtypes.items() if d == "string"]
    ge_frame = frame.astype({c: object for c in strings})  # GX's pandas engine: object strings

    def great_expectations() -> dict[str, int]:
        batch = batch_definition.get_batch(batch_parameters={"dataframe": ge_frame})
        result = batch.validate(suite, result_format="SUMMARY")
        return {
            f"{r.expectation_config.type}({r.expectation_config.kwargs.get('column', '')})": int(
                r.result.get("unexpected_count") or 0
            )
            for r in result.results
            if not r.success
        }

    agree = ours_by_column() == {
        name.split("(")[1].rstrip(")"): rows for name, rows in great_expectations().items()
    }  # also the warm-up of both: imports and caches are not what is measured
    our_time, our_times, our_failures = common.timed(ours, repeats)
    ge_time, ge_times, ge_failures = common.timed(great_expectations, ge_repeats)
    n_rules = len(contract.rule_names(spec=spec))
    return [
        "| tool | scope | median s | runs (s) | GX time / this | failures reported |",
        "|---|---|---|---|---|---|",
        f"| ours: `evaluate_contract(frame, spec=spec)` + evidence | {n_rules} rules | "
        f"{our_time:.3f} | {' / '.join(f'{t:.3f}' for t in our_times)} | "
        f"**{ge_time / our_time:.1f}x** | "
        + ", ".join(f"{k}={v}" for k, v in sorted(our_failures.items()))
        + " |",
        f"| Great Expectations, the same rules | {len(items)} expectations | {ge_time:.3f} | "
        f"{' / '.join(f'{t:.3f}' for t in ge_times)} | 1.0x | "
        + ", ".join(f"{k}={v}" for k, v in sorted(ge_failures.items()))
        + " |",
        "",
        "Cross-check (failing rows per column): "
        + ("both report the same." if agree else "they DISAGREE (see the table)."),
        "",
        f"Defects injected after inference: 100 duplicated ids, 50 out-of-range values in two "
        f"numeric columns, 30 unknown labels in one categorical. Mapping the text table through "
        f"the spec (`apply_mapping(raw, spec=spec)`, not in the timed runs): {map_time:.2f} s.",
    ]


def main() -> None:
    """Run the benchmark and write the markdown results (or one child measurement)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ge-repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="100,000 rows, one repeat")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", choices=("ours", "gx"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = (child_ours if args.child == "ours" else child_gx)(args.data)
        print(json.dumps(result))
        return
    if args.quick:
        args.rows, args.repeats, args.ge_repeats = 100_000, 1, 1

    machine_before = common.machine(load=True)
    raw = make_table(args.rows)
    me = [sys.executable, str(Path(__file__).resolve())]
    with tempfile.TemporaryDirectory(prefix="bench_spec_") as tmp:
        parquet, csv = Path(tmp) / "table.parquet", Path(tmp) / "table.csv"
        raw.to_parquet(parquet, index=False)
        raw.to_csv(csv, index=False)
        infer_time, infer_times, (text, spec), infer_cpu = common.timed_cpu(
            lambda: infer_spec_text(raw, target=TARGET, id_column=ID), args.repeats
        )
        cli = [sys.executable, "-m", "churn_platform", "spec", "infer"]
        flags = ["--target", TARGET, "--id", ID, "--force", "-o", str(Path(tmp) / "spec.yaml")]
        cli_parquet = measured([*cli, str(parquet), *flags])
        cli_csv = measured([*cli, str(csv), *flags])
        ours_child = measured([*me, "--child", "ours", "--data", str(parquet)])
        ours_run = json.loads(ours_child[2])
        try:
            gx_child: tuple[float, float, str, float] | None = measured(
                [*me, "--child", "gx", "--data", str(parquet)]
            )
        except RuntimeError as exc:
            gx_child, gx_error = None, str(exc).splitlines()[-1]
        gx = json.loads(gx_child[2]) if gx_child else None
        size_parquet, size_csv = parquet.stat().st_size, csv.stat().st_size

    kinds: dict[str, int] = {}
    for feature in spec.features.values():
        kinds[feature.kind] = kinds.get(feature.kind, 0) + 1
    lines = [
        "# Spec inference benchmark",
        "",
        f"- date: {common.utc_now()}",
        f"- command: `{common.command_line(__file__)}`",
        f"- table: {args.rows:,} rows x {raw.shape[1]} columns, every cell text (as a CSV "
        f"export): Parquet {size_parquet / 2**20:.0f} MiB, CSV {size_csv / 2**20:.0f} MiB",
        f"- inferred: {len(spec.features)} features ("
        + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        + f"); target positive {list(spec.target.positive)}; left out: email",
        f"- machine: {machine_before} (before); {common.machine(load=True)} (after). Absolute times move "
        "with the load average.",
        f"- python {platform.python_version()}, "
        + common.versions_text("pandas", "numpy", "pyarrow", "great_expectations"),
        "",
        "## Profiling / inference",
        "",
        "| tool | what it does | wall s | CPU s | peak RSS MiB |",
        "|---|---|---|---|---|",
        f"| ours: `infer_spec_text` in process (median of {args.repeats}: "
        f"{' / '.join(f'{t:.2f}' for t in infer_times)}) | kinds, ranges, null rates, allowed "
        f"sets, target, commented YAML | {infer_time:.2f} | {infer_cpu:.2f} | - |",
        f"| ours: infer in its own process (Parquet loaded first, not timed) | the same | "
        f"{ours_run['seconds']:.2f} | {ours_run['cpu']:.2f} | {ours_child[1]:.0f} |",
        f"| ours: `python -m churn_platform spec infer table.parquet` | the whole command "
        f"(start-up and imports, read, infer, write) | {cli_parquet[0]:.2f} | "
        f"{cli_parquet[3]:.2f} | {cli_parquet[1]:.0f} |",
        f"| ours: `python -m churn_platform spec infer table.csv` | the whole command, CSV read "
        f"as text | {cli_csv[0]:.2f} | {cli_csv[3]:.2f} | {cli_csv[1]:.0f} |",
    ]
    if gx is not None and gx_child is not None:
        lines.append(
            f"| GX 1.x column descriptive metrics (typed table, its best case) | min/max/mean/"
            f"median, null and non-null counts, unique proportion: {gx['metrics']} metrics, "
            f"{gx['failed']} failed; no kinds, sets, target or spec | {gx['seconds']:.2f} | "
            f"{gx['cpu']:.2f} | {gx_child[1]:.0f} |"
        )
    else:
        lines.append(f"| GX column descriptive metrics | not run: {gx_error} | - | - | - |")
    lines += [
        "| TFDV `infer_schema` | not run: needs TensorFlow, not in this project's "
        "environment | - | - | - |",
        "",
        "Peak RSS includes the table itself (each process reads the Parquet file). CPU s is "
        "the process's own CPU time, steadier than wall time on a shared machine.",
        "",
        "## The inferred spec's contract, ours vs Great Expectations",
        "",
        *contract_rows(raw, spec, args.repeats, args.ge_repeats),
        "",
    ]
    common.write_result(args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
