"""Time the data contract on 1M rows against pandera, plain pandas and Great Expectations.

Run from the repository root:

    .venv/bin/python benchmarks/bench_contract.py [--rows 1000000] [--repeats 5]

The frame is synthetic (``core.synthetic``) with injected defects so every tool has
failure evidence to produce, mapped to canonical dtypes first (that step is timed
separately). Each tool is timed ``--repeats`` times; the median is reported. The
result table goes to ``benchmarks/results/bench_contract.md``.

What each row measures:
* ours (all rules): ``evaluate_contract`` - every contract rule with failure evidence.
* ours (6 GE rules): the same six checks that GE and plain pandas run, via our rules.
* pandera lazy validate: ``pandera_schema(spec=spec).validate(lazy=True)``, the same contract.
* plain pandas: the six checks hand-written, with a 20-row failure sample each.
* Great Expectations: the six checks as GX 1.x expectations (ephemeral context,
  pandas datasource, whole-dataframe batch, result_format SUMMARY).
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from churn_platform.core import schema as s
from churn_platform.core.contract import (
    FrameView,
    contract_rules,
    data_version,
    evaluate_contract,
    pandera_failed_rules,
    pandera_schema,
)
from churn_platform.core.mapping import apply_mapping
from churn_platform.core.spec import default_spec
from churn_platform.core.synthetic import SyntheticSpec, generate

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import _common as common  # noqa: E402

RESULTS = common.result_path(__file__)
SPEC = default_spec()
GE_RULES = (
    "customer_id_not_null",
    "customer_id_unique",
    "monthly_spend_mean_in_range",
    "contract_type_in_set",
    "tenure_months_in_range",
    "monthly_spend_in_range",
)


def make_frame(rows: int) -> pd.DataFrame:
    """Synthetic rows with defects in every checked column."""
    spec = SyntheticSpec(
        n_rows=rows,
        seed=42,
        null_rate={s.CUSTOMER_ID: 0.001, s.REGION: 0.01},
        duplicate_ids=100,
        out_of_range={
            s.TENURE_MONTHS: 50,
            s.MONTHLY_SPEND: 50,
            s.LAST_LOGIN_HOUR: 20,
            s.SUPPORT_TICKETS: 10,
        },
    )
    raw = generate(spec)
    raw.loc[np.arange(7, rows, max(rows // 30, 1))[:30], s.CONTRACT_TYPE] = "weekly"
    return raw


def ours_all(frame: Any) -> dict[str, int]:
    """Every contract rule with evidence; failing rows per failed rule."""
    return {r.name: r.failing_rows for r in evaluate_contract(frame, spec=SPEC) if not r.passed}


def ours_subset(frame: pd.DataFrame) -> dict[str, int]:
    """Only the six rules the other tools run."""
    rules = [r for r in contract_rules(spec=SPEC) if r.name in GE_RULES]
    view = FrameView(frame)
    results = [r.evaluate(view) for r in rules]
    return {r.name: r.failing_rows for r in results if not r.passed}


def pandera_lazy(frame: pd.DataFrame) -> dict[str, int]:
    """The same contract through pandera; failure cases per failed rule."""
    schema = pandera_schema(spec=SPEC)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            schema.validate(frame, lazy=True)
        except pa.errors.SchemaErrors as exc:
            cases = exc.failure_cases
            return {
                name: int((cases["check"] == name).sum())
                for name in pandera_failed_rules(exc, spec=SPEC)
            }
    return {}


def plain_pandas(frame: pd.DataFrame) -> dict[str, int]:
    """The six checks written directly in pandas, each with a 20-row sample."""
    out, samples = {}, {}
    ids = frame[s.CUSTOMER_ID]
    checks = {
        "customer_id_not_null": ids.isna(),
        "customer_id_unique": ids.duplicated(keep=False) & ids.notna(),
        "contract_type_in_set": ~frame[s.CONTRACT_TYPE].isin(s.CONTRACT_TYPES)
        & frame[s.CONTRACT_TYPE].notna(),
        "tenure_months_in_range": ~frame[s.TENURE_MONTHS].between(0, 600)
        & frame[s.TENURE_MONTHS].notna(),
        "monthly_spend_in_range": ~frame[s.MONTHLY_SPEND].between(0, 10_000)
        & frame[s.MONTHLY_SPEND].notna(),
    }
    for name, mask in checks.items():
        mask = mask.fillna(False).astype(bool)
        if mask.any():
            out[name] = int(mask.sum())
            samples[name] = frame.loc[mask, [s.CUSTOMER_ID]].head(20)
    mean = frame[s.MONTHLY_SPEND].mean()
    if not 20 <= mean <= 400:
        out["monthly_spend_mean_in_range"] = 0
    return out


def great_expectations_runner() -> Callable[[pd.DataFrame], dict[str, int]]:
    """A function validating a frame with GX 1.x."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("bench")
    batch_definition = source.add_dataframe_asset("customers").add_batch_definition_whole_dataframe(
        "all"
    )
    suite = context.suites.add(gx.ExpectationSuite(name="churn_contract"))
    expectations = {
        "customer_id_not_null": gx.expectations.ExpectColumnValuesToNotBeNull(column=s.CUSTOMER_ID),
        "customer_id_unique": gx.expectations.ExpectColumnValuesToBeUnique(column=s.CUSTOMER_ID),
        "monthly_spend_mean_in_range": gx.expectations.ExpectColumnMeanToBeBetween(
            column=s.MONTHLY_SPEND, min_value=20, max_value=400
        ),
        "contract_type_in_set": gx.expectations.ExpectColumnValuesToBeInSet(
            column=s.CONTRACT_TYPE, value_set=list(s.CONTRACT_TYPES)
        ),
        "tenure_months_in_range": gx.expectations.ExpectColumnValuesToBeBetween(
            column=s.TENURE_MONTHS, min_value=0, max_value=600
        ),
        "monthly_spend_in_range": gx.expectations.ExpectColumnValuesToBeBetween(
            column=s.MONTHLY_SPEND, min_value=0, max_value=10_000
        ),
    }
    names = {}
    for name, expectation in expectations.items():
        suite.add_expectation(expectation)
        names[expectation.expectation_type] = names.get(expectation.expectation_type, []) + [name]

    def run(frame: pd.DataFrame) -> dict[str, int]:
        batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(suite, result_format="SUMMARY")
        out = {}
        for item in result.results:
            if item.success:
                continue
            config = item.expectation_config
            column = config.kwargs.get("column")
            name = next(n for n in names[config.type] if n.startswith(column))
            out[name] = int(item.result.get("unexpected_count") or 0)
        return out

    return run


def main() -> None:
    """Run the benchmark and write the markdown results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ge-repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    machine_before = common.machine(load=True)
    raw = make_frame(args.rows)
    map_time, _, mapped = common.timed(lambda: apply_mapping(raw, spec=SPEC), 3)
    frame = mapped.frame
    version_time, _, version = common.timed(lambda: data_version(frame), 3)
    ge_run = great_expectations_runner()
    # GX's pandas engine wants plain object columns for strings; give it its best case
    ge_frame = frame.astype({c: object for c in (s.CUSTOMER_ID, s.CONTRACT_TYPE, s.REGION)})

    rows = []
    runs: list[tuple[str, Callable[[], dict[str, int]], int, str]] = [
        ("ours: evaluate_contract, all rules + evidence", lambda: ours_all(mapped), args.repeats,
         f"{len(contract_rules(spec=SPEC))} rules"),
        ("ours: the 6 GE rules + evidence", lambda: ours_subset(frame), args.repeats, "6 rules"),
        ("pandera lazy validate (same contract)", lambda: pandera_lazy(frame), args.repeats,
         f"{len(contract_rules(spec=SPEC))} rules"),
        ("plain pandas (6 rules, 20-row samples)", lambda: plain_pandas(frame), args.repeats,
         "6 rules"),
        ("Great Expectations (6 expectations)", lambda: ge_run(ge_frame), args.ge_repeats,
         "6 expectations"),
    ]  # fmt: skip
    for label, fn, repeats, scope in runs:
        fn()  # warm-up: imports, caches and lazy initialisation are not what we measure
        median, times, failures = common.timed(fn, repeats)
        rows.append((label, scope, median, times, failures))
        print(f"{label}: median {median:.3f}s {[round(t, 3) for t in times]}", file=sys.stderr)

    shared = {
        label: {k: v for k, v in failures.items() if k in GE_RULES}
        for label, _, _, _, failures in rows
    }
    agree = len({tuple(sorted(v.items())) for v in shared.values()}) == 1
    ours_all_time = rows[0][2]
    ours_subset_time = rows[1][2]
    ge_time = rows[-1][2]
    lines = [
        "# Data contract benchmark",
        "",
        f"- date: {common.utc_now()}",
        f"- command: `.venv/bin/python benchmarks/bench_contract.py --rows {args.rows} "
        f"--repeats {args.repeats} --ge-repeats {args.ge_repeats}`",
        f"- rows: {args.rows:,}; defects: 0.1% null ids, 100 duplicated ids, 50/50/20/10 "
        "out-of-range tenure/spend/hour/tickets, 30 unknown contract types, 1% null regions",
        f"- machine: {machine_before} (before); {common.machine(load=True)} (after). Absolute times move "
        "with the load average, the ratios much less.",
        f"- python {platform.python_version()}, "
        + common.versions_text("pandas", "numpy", "pandera", "great_expectations"),
        "",
        "| tool | scope | median s | runs (s) | ratio to ours (all rules) | "
        "GE time / this | failing rows reported |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, scope, median, times, failures in rows:
        failures_text = ", ".join(f"{k}={v}" for k, v in sorted(failures.items()))
        lines.append(
            f"| {label} | {scope} | {median:.3f} | {' / '.join(f'{t:.3f}' for t in times)} | "
            f"{median / ours_all_time:.2f}x | {ge_time / median:.1f}x | {failures_text} |"
        )
    lines += [
        "",
        f"GE time / ours: **{ge_time / ours_all_time:.1f}x** against all {len(contract_rules(spec=SPEC))} "
        f"of our rules, **{ge_time / ours_subset_time:.1f}x** like for like (the same six rules).",
        "",
        "Cross-check on the six shared rules (failing rows per rule): "
        + ("all tools agree." if agree else f"tools DISAGREE: {shared}"),
        "",
        "Not in the timed runs (timed separately, median of 3):",
        "",
        f"- `apply_mapping` (typing the raw frame to canonical dtypes): {map_time:.3f} s",
        f"- `data_version` (sha256 over each column's bytes, through Arrow): {version_time:.3f} s "
        f"(`{version[:16]}...`)",
        "",
    ]
    common.write_result(args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
