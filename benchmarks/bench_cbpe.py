"""CBPE on 1M served probabilities: ``core.cbpe`` vs NannyML 0.13's CBPE, same data.

Data: the synthetic churn world (``core.synthetic``). Reference (the holdout): 100k rows,
seed 1; analysis (a served week): 1M rows, seed 2, covariate-shifted (spend +60, contract
mix 75/15/10), labels kept only to report the true AUC. The served score ranks by the true
mechanism but is miscalibrated (``sigmoid(1.6 * log-odds + 0.7)``), so both need their
calibrator.

Ours: ``fit_calibrator`` on the reference (isotonic; what training logs with the model),
then the expected AUC: ``estimate_auc_calibrated`` (the headline: 65,536 bins of the served
score, counted with one ``np.bincount``; only rows in the few bins where the isotonic
calibrator rises are calibrated one by one; its error bound against the exact value is
reported), ``estimate_auc_binned`` (every row calibrated, 65,536 bins of the calibrated
value) and ``estimate_auc`` (exact, one sort), both ranked by the calibrated probabilities
themselves (NannyML's definition); and ``estimate_auc`` ranked by the served score (what
``model_performance`` reports, not timed). The calibrator is monotone, so ranking by the
served score and by the calibrated value give the same expected AUC.
NannyML: ``CBPE(metrics=["roc_auc"], chunk_number=1)`` fit on the reference, estimate on the
analysis rows (its default isotonic calibration, applied when its check says it helps).

NannyML pins its own dependencies, so it runs in its own virtualenv, created on first use:
``python -m venv /work/venvs/nannyml && /work/venvs/nannyml/bin/python -m pip install
nannyml==0.13.1 pyarrow statsmodels`` (statsmodels: imported by NannyML but not declared; ``--venv`` to put it elsewhere); never in the platform's.
Both sides read the same Parquet files; each side's time is fit + estimate, median of the
repeats, reading excluded.

Goals (issue #23): agreement within 0.005 AUC; at least 10x faster.

Run:  .venv/bin/python benchmarks/bench_cbpe.py [--rows 1000000] [--repeats 3]
Writes benchmarks/results/bench_cbpe.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import _common as common  # noqa: E402

from churn_platform.core import cbpe  # noqa: E402
from churn_platform.core.synthetic import SyntheticSpec, churn_log_odds, generate  # noqa: E402

DEFAULT_VENV = Path("/work/venvs/nannyml")
NANNYML = "nannyml==0.13.1"

PEER = """
import json, sys, time
import pandas as pd
import nannyml as nml

folder, repeats = sys.argv[1], int(sys.argv[2])
reference = pd.read_parquet(folder + "/reference.parquet")
analysis = pd.read_parquet(folder + "/analysis.parquet").drop(columns=["y"])
times, estimates, value = [], [], None
for _ in range(repeats):
    t0 = time.perf_counter()
    estimator = nml.CBPE(
        y_pred_proba="p", y_pred="pred", y_true="y", metrics=["roc_auc"],
        problem_type="classification_binary", chunk_number=1,
    )
    estimator.fit(reference)
    t1 = time.perf_counter()
    result = estimator.estimate(analysis)
    times.append(time.perf_counter() - t0)
    estimates.append(time.perf_counter() - t1)
    frame = result.filter(period="analysis").to_df()
    value = float(frame[("roc_auc", "value")].iloc[0])
print(json.dumps({"times": times, "estimates": estimates, "auc": value, "version": nml.__version__}))
"""


def ensure_venv(venv: Path) -> Path:
    """The virtualenv's python, creating the venv and installing NannyML when missing."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import nannyml"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", NANNYML, "pyarrow", "statsmodels"], check=True
    )
    return python


def served(frame: pd.DataFrame) -> np.ndarray:
    """The served score: ranks by the mechanism, miscalibrated."""
    return 1.0 / (1.0 + np.exp(-(1.6 * churn_log_odds(frame) + 0.7)))


def data(rows: int, folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and analysis frames (y, p, pred), also written as Parquet to ``folder``."""
    out = []
    for name, spec in (
        ("reference", SyntheticSpec(n_rows=100_000, seed=1)),
        (
            "analysis",
            SyntheticSpec(n_rows=rows, seed=2, spend_shift=60.0, contract_mix=(0.75, 0.15, 0.10)),
        ),
    ):
        frame = generate(spec)
        p = served(frame)
        table = pd.DataFrame({"y": frame["churned"].to_numpy(), "p": p, "pred": (p >= 0.5) * 1})
        table.to_parquet(folder / f"{name}.parquet", index=False)
        out.append(table)
    return out[0], out[1]


def main(argv: list[str] | None = None) -> None:
    """Build the data, time both sides, write the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--out", type=Path, default=common.result_path(__file__))
    args = parser.parse_args(argv)
    python = ensure_venv(args.venv)
    with tempfile.TemporaryDirectory(prefix="bench_cbpe_") as tmp:
        folder = Path(tmp)
        reference, analysis = data(args.rows, folder)
        y_ref, s_ref, s = reference["y"], reference["p"].to_numpy(), analysis["p"].to_numpy()

        def exact() -> float | None:
            return cbpe.estimate_auc(cbpe.fit_calibrator(y_ref, s_ref).apply(s))

        def binned() -> tuple[float | None, float]:
            return cbpe.estimate_auc_binned(cbpe.fit_calibrator(y_ref, s_ref).apply(s))

        def calibrated() -> tuple[float | None, float]:
            return cbpe.estimate_auc_calibrated(cbpe.fit_calibrator(y_ref, s_ref), s)

        calibrator = cbpe.fit_calibrator(y_ref, s_ref)
        est_s, est_all, _ = common.timed(
            lambda: cbpe.estimate_auc_calibrated(calibrator, s), args.repeats
        )
        exact_s, exact_all, same_def = common.timed(exact, args.repeats)
        binned_s, binned_all, (by_bins, bins_bound) = common.timed(binned, args.repeats)
        ours_s, ours_all, (fast, bound) = common.timed(calibrated, args.repeats)
        by_score = cbpe.estimate_auc(cbpe.fit_calibrator(y_ref, s_ref).apply(s), s)
        script = folder / "peer.py"
        script.write_text(PEER)
        load = common.load_text()
        done = subprocess.run(
            [str(python), str(script), str(folder), str(args.repeats)],
            check=True,
            capture_output=True,
            text=True,
        )
    peer = json.loads(done.stdout.strip().splitlines()[-1])
    peer_s = float(np.median(peer["times"]))
    true_auc = roc_auc_score(analysis["y"], s)
    assert same_def is not None and by_score is not None
    assert fast is not None and by_bins is not None
    diff = abs(same_def - peer["auc"])
    diff_fast = max(abs(fast - peer["auc"]), abs(by_bins - peer["auc"]))
    ratio, ratio_exact = peer_s / ours_s, peer_s / exact_s
    peer_est = float(np.median(peer["estimates"]))
    cmd = common.command_line(__file__, [f"--rows {args.rows}", f"--repeats {args.repeats}"])
    lines = [
        "# CBPE: churn_platform.core.cbpe vs NannyML",
        "",
        f"Command: `{cmd}`  ",
        f"Date: {common.utc_now()}",
        "",
        f"Data: reference 100,000 rows; analysis {args.rows:,} rows, covariate-shifted; "
        "served scores miscalibrated (see the script's docstring).",
        "",
        "| implementation | fit + estimate, median | all runs (s) | estimated AUC | vs true AUC "
        f"{true_auc:.4f} |",
        "|---|---|---|---|---|",
        f"| ours `estimate_auc_calibrated` (65,536 bins of the score, one bincount; rows "
        f"calibrated only where the calibrator rises) | {ours_s:.3f} s | "
        f"{', '.join(f'{t:.3f}' for t in ours_all)} | {fast:.5f} "
        f"(binning bound {bound:.1e}) | {fast - true_auc:+.4f} |",
        f"| ours `estimate_auc_binned` (every row calibrated, 65,536 bins; NannyML's "
        f"definition) | {binned_s:.3f} s | {', '.join(f'{t:.3f}' for t in binned_all)} | "
        f"{by_bins:.5f} (binning bound {bins_bound:.1e}) | {by_bins - true_auc:+.4f} |",
        f"| ours `estimate_auc` (exact, one sort; NannyML's definition) | {exact_s:.3f} s | "
        f"{', '.join(f'{t:.3f}' for t in exact_all)} | {same_def:.5f} | "
        f"{same_def - true_auc:+.4f} |",
        "| ours `estimate_auc`, ranked by the served score (what model_performance reports) "
        f"| not timed | | {by_score:.5f} | {by_score - true_auc:+.4f} |",
        f"| NannyML {peer['version']} `CBPE(metrics=['roc_auc'])` | {peer_s:.3f} s | "
        f"{', '.join(f'{t:.3f}' for t in peer['times'])} | {peer['auc']:.5f} | "
        f"{peer['auc'] - true_auc:+.4f} |",
        "",
        f"Agreement: |exact - NannyML| = {diff:.1e}, |calibrated - NannyML| = "
        f"{abs(fast - peer['auc']):.1e}, |binned - NannyML| = {abs(by_bins - peer['auc']):.1e}"
        f" AUC (goal < 0.005: {'met' if max(diff, diff_fast) < 0.005 else 'NOT met'}"
        f"). Speed: NannyML / calibrated = {ratio:.1f}x (goal >= 10x: "
        f"{'met' if ratio >= 10 else 'NOT met'}); NannyML / binned = {peer_s / binned_s:.1f}x; NannyML / exact = "
        f"{ratio_exact:.1f}x. "
        "Every time above includes fitting the isotonic calibrator on the 100k reference rows.",
        "",
        "The weekly cost (the calibrator is fitted once, at training time, and logged with "
        f"the version): ours, `estimate_auc_calibrated`: {est_s * 1e3:.1f} ms (runs "
        f"{', '.join(f'{t * 1e3:.1f}' for t in est_all)} ms); NannyML `estimate` after `fit`: "
        f"{peer_est * 1e3:.1f} ms (runs {', '.join(f'{t * 1e3:.1f}' for t in peer['estimates'])}"
        f" ms): {peer_est / est_s:.1f}x.",
        "",
        f"Machine: {common.machine(memory=True)}; load average before NannyML {load}, at the "
        f"end {common.load_text()}; Python {platform.python_version()}, "
        f"{common.versions_text('numpy', 'pandas', 'scikit-learn')}; NannyML in its own "
        f"virtualenv ({args.venv}).",
        "",
    ]
    common.write_result(args.out, "\n".join(lines))


if __name__ == "__main__":
    main()
