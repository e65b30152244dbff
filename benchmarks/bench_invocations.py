"""MLflow's scoring protocol costs nothing extra: ``/invocations`` vs ``/predict`` on one server.

One model server (the shipped training pipeline, registered with ``MlflowRegistry``) answers the same
``{"dataframe_records": [...]}`` body on both paths (``/predict`` accepts that shape too), so
the only difference is the protocol handling. Closed loop, ``--concurrency`` keep-alive
connections, interleaved rounds; the best round per (path, payload) counts. Target (issue 15):
``/invocations`` throughput within 10% of ``/predict``.

    python benchmarks/bench_invocations.py [--single 2000 --batch 300 --rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import _common as common  # noqa: E402
from bench_serving import Result, measure, register_model, start_ours  # noqa: E402

from churn_platform.core.synthetic import SyntheticSpec, generate  # noqa: E402
from churn_platform.targets.local import stop_process  # noqa: E402
from churn_platform.testing import to_records  # noqa: E402

TARGET_RATIO = 0.9


def render(results: list[Result], args: argparse.Namespace, what: str, command: str) -> str:
    best: dict[tuple[str, str], Result] = {}
    for r in results:
        key = (r.server, r.payload)
        if key not in best or r.rps > best[key].rps:
            best[key] = r
    lines = [
        "# /invocations (MLflow protocol) vs /predict on one churn_platform model server",
        "",
        f"Run: {common.utc_now()} on {common.machine(load=True)}. Command: `{command}`",
        "",
        f"Model: {what}. One server process, `OMP_NUM_THREADS=1`, 127.0.0.1; the same "
        f"`dataframe_records` body on both paths; {args.concurrency} keep-alive connections; "
        f"best of {args.rounds} interleaved rounds.",
        "",
        "| payload | path | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for payload in ("1 row", "100 rows"):
        for path in ("/predict", "/invocations"):
            r = best[(path, payload)]
            lines.append(
                f"| {payload} | {path} | {r.rps:.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | "
                f"{r.errors} |"
            )
    lines += ["", "| payload | throughput /invocations / /predict | within 10% |", "|---|---:|---|"]
    for payload in ("1 row", "100 rows"):
        ratio = best[("/invocations", payload)].rps / best[("/predict", payload)].rps
        lines.append(f"| {payload} | {ratio:.2f} | {'yes' if ratio >= TARGET_RATIO else 'NO'} |")
    lines += ["", "Every round:", "", "| path | payload | req/s | p50 ms | p99 ms |"]
    lines += ["|---|---|---:|---:|---:|"]
    for r in results:
        lines.append(
            f"| {r.server} | {r.payload} | {r.rps:.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the benchmark and write the markdown report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--single", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", choices=("real", "logistic"), default="real")
    parser.add_argument("--out", default=str(common.result_path(__file__)))
    args = parser.parse_args()
    command = "python benchmarks/bench_invocations.py " + " ".join(sys.argv[1:])
    args.out = str(Path(args.out).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chdir(work)  # a SQLite store's default artifact root is ./mlruns: keep it in tmp
        tracking_uri, model_uri, what = register_model(args.model, work)
        records = to_records(generate(SyntheticSpec(n_rows=200, seed=5, id_offset=500_000)))
        single = json.dumps({"dataframe_records": records[:1]}).encode()
        batch = json.dumps({"dataframe_records": records[:100]}).encode()
        pid, port = start_ours(tracking_uri, model_uri, work)
        results: list[Result] = []
        try:
            for _ in range(args.rounds):
                for payload, body, total in (
                    ("1 row", single, args.single),
                    ("100 rows", batch, args.batch),
                ):
                    for path in ("/predict", "/invocations"):
                        r = measure(path, port, path, payload, body, total, args.concurrency)
                        assert r.errors == 0, f"{path} answered {r.errors} errors"
                        print(f"{path:12s} {payload:8s} {r.rps:7.0f} req/s", flush=True)
                        results.append(r)
        finally:
            stop_process(pid)
    common.write_result(args.out, render(results, args, what, command))


if __name__ == "__main__":
    main()
