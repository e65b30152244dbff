"""Simulate the slice rules: how often does a slice fail when it should not, and when it should?

Each trial draws fresh binormal scores (see ``core.gate_simulation``) for one slice of a
fixed number of churners and non-churners with *known* slice AUCs, and judges it with the
real code: the model check's floor rule (``slices.slice_aucs`` with its bootstrap
interval: fail when the 95% interval's upper bound is below the floor) and the gate's
slice rule (``slices.paired_slice_deltas`` and ``gate.slice_failures``: fail when the
one-sided 95% upper bound of the challenger-minus-champion delta is below -0.02), each
beside the point rule it replaced (point AUC below the floor; point delta below -0.02).

Run:  .venv/bin/python benchmarks/simulate_slices.py [--quick] [--trials N]
Writes benchmarks/results/simulate_slices.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import _common as common  # noqa: E402

from churn_platform.core import gate, slices  # noqa: E402
from churn_platform.core.gate_simulation import SLICE_RULES, simulate_slices  # noqa: E402

FLOOR = 0.74  # the shipped spec's model.min_slice_auc
SIZES = (6, 10, 20, 38, 100, 300)  # churners in the slice; non-churners are 4x as many
# (what a failure means, challenger AUC, champion AUC, the rules that scenario is about)
SCENARIOS = (
    ("check: slice at the floor (false failure)", FLOOR, FLOOR, "check"),
    ("check: slice 0.04 above the floor (false failure)", FLOOR + 0.04, FLOOR + 0.04, "check"),
    ("check: slice 0.10 below the floor (detection)", FLOOR - 0.10, FLOOR - 0.10, "check"),
    ("gate: equal models (false failure)", 0.80, 0.80, "gate"),
    ("gate: slice loses 0.05 (detection)", 0.75, 0.80, "gate"),
    ("gate: slice loses 0.10 (detection)", 0.70, 0.80, "gate"),
)


def main(argv: list[str] | None = None) -> None:
    """Run the scenarios and write the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 trials, 300 resamples")
    parser.add_argument("--trials", type=int, default=None, help="trials per scenario")
    parser.add_argument("--out", type=Path, default=common.result_path(__file__))
    args = parser.parse_args(argv)
    trials = args.trials or (60 if args.quick else 300)
    config = gate.GateConfig(n_resamples=300 if args.quick else 1_000)
    cmd = common.command_line(__file__, ["--quick"] if args.quick else [])
    lines = [
        "# Slice rule simulation: interval rules vs the point rules they replaced",
        "",
        f"Command: `{cmd}`" + (f" (trials={args.trials})" if args.trials else ""),
        "",
        f"Setup: one slice of n churners and 4n non-churners, binormal scores with known slice "
        f"AUCs, within-class correlation of the two models' scores 0.9; floor "
        f"(`min_slice_auc`) {FLOOR}, slice tolerance {config.slice_tolerance}; "
        f"{config.n_resamples} bootstrap resamples per judgement; a slice with fewer than "
        f"{slices.MIN_SLICE_CLASS_ROWS} churners or non-churners is 'not enough evidence' and "
        f"fails no interval rule; {trials} trials per row. Rates with a 95% Wilson interval.",
        "",
        "| scenario | churners | interval rule (default) fails | point rule (earlier) fails "
        "| not enough evidence |",
        "|---|---|---|---|---|",
    ]
    total = 0.0
    for s_i, (label, new, old, side) in enumerate(SCENARIOS):
        interval_rule, point_rule = (name for name in SLICE_RULES if name.startswith(side))
        for n_pos in SIZES:
            res = simulate_slices(
                n_trials=trials, n_pos=n_pos, n_neg=4 * n_pos, auc_challenger=new,
                auc_champion=old, floor=FLOOR, gate_config=config, seed=100 * s_i + n_pos,
            )  # fmt: skip
            total += res.seconds
            cells = []
            for name in (interval_rule, point_rule):
                lo, hi = common.wilson_interval(res.failures[name], res.n_trials)
                cells.append(f"{res.rates[name]:.1%} [{lo:.1%}, {hi:.1%}]")
            lines.append(
                f"| {label} | {n_pos} | {cells[0]} | {cells[1]} "
                f"| {res.not_enough_evidence / res.n_trials:.0%} |"
            )
            print(f"{label}, {n_pos} churners: {res.rates} ({res.seconds:.1f} s)")
    lines += [
        "",
        "Rules: " + "; ".join(SLICE_RULES) + ".",
        "",
        f"Machine: {common.platform_text()} (load average at the end "
        f"{os.getloadavg()[0]:.2f}), Python {platform.python_version()}, "
        f"{common.versions_text('numpy', 'scipy')}. Total time {total:.1f} s.",
        "",
    ]
    common.write_result(args.out, "\n".join(lines), echo=False, announce=True)


if __name__ == "__main__":
    main()
