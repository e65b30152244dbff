"""PSI on 1M current rows x 10 features: churn_platform.core.drift vs Evidently 0.7.

Features (10): the 4 numeric schema columns, contract_type, region, is_enterprise, and
3 derived numeric columns (lifetime_value = tenure * spend, spend_per_ticket =
spend / (tickets + 1), tickets_per_year = 12 * tickets / tenure). Reference: 100k rows
(seed 1); current: 1M rows (seed 2) with monthly spend shifted +60, so one feature drifts
(spend, and the two derived from it).

Ours is timed with the reference profile already built and loaded from JSON (what the
sensor does each tick); the one-off profile build is timed separately. Evidently has no
stored profile: each run re-reads the reference rows, so its time includes that work.
Binning differs, so PSI values agree only roughly: ours uses 10 reference-quantile bins
fixed on the reference between its min and max, below-min/above-max bins, one bin per
value for columns with at most 10 values, plus a missing bin (epsilon smoothing 1e-4);
Evidently's ``psi`` uses Sturges equal-width bins over reference + current combined for
numeric columns with more than 20 distinct values, one bin per value otherwise, and
replaces empty bins by 0.0001 (or a millionth of the smallest share).

Run:  .venv/bin/python benchmarks/bench_psi.py [--quick]
Writes benchmarks/results/bench_psi.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import _common as common  # noqa: E402

from churn_platform.core import drift  # noqa: E402
from churn_platform.core import schema as s  # noqa: E402
from churn_platform.core.spec import default_spec  # noqa: E402
from churn_platform.core.synthetic import SyntheticSpec, generate  # noqa: E402

DERIVED = ("lifetime_value", "spend_per_ticket", "tickets_per_year")
NUMERIC = (*s.NUMERIC_FEATURES, *DERIVED)
CATEGORICAL = (s.CONTRACT_TYPE, s.REGION, s.IS_ENTERPRISE)


def with_derived(frame: pd.DataFrame) -> pd.DataFrame:
    """The canonical frame plus the 3 derived numeric columns, categoricals as 'string'."""
    out = frame.copy()
    tenure = out[s.TENURE_MONTHS].astype(float)
    spend = out[s.MONTHLY_SPEND].astype(float)
    tickets = out[s.SUPPORT_TICKETS].astype(float)
    out["lifetime_value"] = tenure * spend
    out["spend_per_ticket"] = spend / (tickets + 1.0)
    out["tickets_per_year"] = 12.0 * tickets / tenure
    for col in (s.CONTRACT_TYPE, s.REGION):
        out[col] = out[col].astype("string")  # the validated frame's dtype
    return out[[*NUMERIC, *CATEGORICAL]]


def evidently_psi(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, float]:
    """PSI per column from Evidently 0.7's ``ValueDrift(method='psi')`` metrics."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    definition = DataDefinition(
        numerical_columns=list(NUMERIC), categorical_columns=list(CATEGORICAL)
    )
    report = Report([ValueDrift(column=c, method="psi") for c in (*NUMERIC, *CATEGORICAL)])
    snapshot = report.run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    return {m["config"]["column"]: float(m["value"]) for m in snapshot.dict()["metrics"]}


def main(argv: list[str] | None = None) -> None:
    """Build data, time both implementations, write the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k current rows, fewer repeats")
    parser.add_argument("--out", type=Path, default=common.result_path(__file__))
    args = parser.parse_args(argv)
    n_current = 100_000 if args.quick else 1_000_000
    repeats = 3 if args.quick else 7

    import evidently  # before the timed runs: its import cost is not measured

    reference = with_derived(generate(SyntheticSpec(n_rows=100_000, seed=1)))
    current = with_derived(generate(SyntheticSpec(n_rows=n_current, seed=2, spend_shift=60)))

    build_s, _, profile = common.timed(
        lambda: drift.build_reference_profile(
            reference, default_spec(), numeric=NUMERIC, categorical=CATEGORICAL
        ),
        3,
    )
    profile = json.loads(json.dumps(profile))  # as the sensor loads it
    ours_s, ours_all, ours = common.timed(lambda: drift.psi(profile, current), repeats)
    evid_s, evid_all, theirs = common.timed(
        lambda: evidently_psi(reference, current), max(1, repeats // 2)
    )

    rows = [
        "| feature | ours: PSI | Evidently: PSI | both say drift (> 0.2)? |",
        "|---|---|---|---|",
    ]
    for col in (*NUMERIC, *CATEGORICAL):
        a, b = ours.psi[col], theirs[col]
        verdicts = " / ".join("yes" if v > 0.2 else "no" for v in (a, b))
        rows.append(f"| {col} | {a:.4f} | {b:.4f} | {verdicts} |")

    cmd = common.command_line(__file__, ["--quick"] if args.quick else [])
    lines = [
        "# PSI drift: churn_platform.core.drift vs Evidently",
        "",
        f"Command: `{cmd}`",
        "",
        f"Data: reference 100,000 rows; current {n_current:,} rows x 10 features "
        f"({len(NUMERIC)} numeric incl. 3 derived, {len(CATEGORICAL)} categorical), spend +60.",
        "",
        "| implementation | what is timed | median time | best | all runs (s) "
        "| ratio vs ours (median) |",
        "|---|---|---|---|---|---|",
        f"| ours `drift.psi` | PSI, profile loaded from JSON | {ours_s * 1e3:.1f} ms | "
        f"{min(ours_all) * 1e3:.1f} ms | {', '.join(f'{t:.3f}' for t in ours_all)} | 1.0x |",
        "| ours `drift.build_reference_profile` | one-off, on the 100k reference | "
        f"{build_s * 1e3:.1f} ms | | | |",
        f"| Evidently {evidently.__version__} `ValueDrift(method='psi')` x 10 | Report.run on "
        f"reference + current | {evid_s:.2f} s | {min(evid_all):.2f} s | "
        f"{', '.join(f'{t:.2f}' for t in evid_all)} | {evid_s / ours_s:.0f}x |",
        "",
        "PSI values. Binning differs (below), so expect the same order of magnitude, not the "
        "same digits; a feature near the 0.2 threshold can land on different sides:",
        "",
        *rows,
        "",
        "Binning: ours = 10 quantile bins with edges fixed on the reference between its min and "
        "max, plus below-min and above-max bins; one bin per value (+ `__other__`) for columns "
        "with at most 10 distinct values; plus `__missing__` (and `__unseen__` for "
        "categoricals), shares smoothed with epsilon=1e-4. Evidently = Sturges equal-width bins "
        "over reference+current for numeric columns with > 20 distinct values, one bin per "
        "value otherwise; empty bins set to 1e-4. Expect the largest differences on long-tailed "
        "columns (equal-width bins put most rows in a few bins) and on strongly shifted "
        "columns, where the treatment of nearly empty bins dominates the sum.",
        "",
        f"Machine: {common.platform_text()} (load average at the end "
        f"{common.load_text()}), Python {platform.python_version()}, "
        f"{common.versions_text('numpy', 'pandas', 'evidently')}.",
        "",
    ]
    common.write_result(args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
