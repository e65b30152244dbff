"""Rollback time of the production canary against a real Prometheus (1 s scrapes).

Per trial: a healthy champion serves 100% of a local ``production`` environment
(``LocalProcessTarget``: real model-server and router processes); a candidate that answers
``--fault-rate`` (default 20%) of ``/predict`` with a 500 (``CHURN_FAULT_RATE``) is deployed
beside it; a paced client sends single-record predictions (200 holdout rows, cycling)
through the router; and the real controller, ``core.canary.run_canary`` with
``PrometheusMetrics``, rolls the candidate out until it breaches and rolls back. Each trial
registers a fresh candidate version so no earlier trial's series is inside the analysis
window.

Measured per trial (all on ``time.monotonic``):
(a) breach onset -> release ended on the champion only: from the candidate's first
    requests (the first ``shadowing`` transition, once the router mirrors to it; without a
    shadow step the first ``progressing`` transition, after its weights were set) to the
    ``rolled_back`` transition, recorded after the router confirmed the mirror off (shadow)
    or 100% on the champion (canary step);
(b) rollback decision -> weights restored (``CanaryResult.rollback_seconds``);
(c) last 5xx seen by the clients, after onset;
and the requests that failed through the router during the canary (onset -> rollback),
against what the canary's traffic share predicts (step% x fault rate x requests).

Three canary configurations, all at the local synthetic load of 25 requests/s:
* ``shadow`` (default): ``CanaryConfig()``, the shadow step (all requests mirrored to the
  candidate, clients answered by the champion) and then the sequential test at steps
  5 -> 25 -> 100 (1 s readings, 5% bound, decided on the counts, 90 s per step at most);
* ``sequential``: the same without the shadow step (``shadow=False``), the default before it;
* ``count``: the earlier count rule with the values the asset shipped (15 s window,
  a breach needs >= 5 requests, a pass >= 20), no shadow.

Prometheus, the registered models, the paced client and the Prometheus starter are the
tests' own harness (``churn_platform.testing``).

Run:  .venv/bin/python benchmarks/bench_rollback.py [--trials 5] [--config shadow sequential count]
Writes benchmarks/results/bench_rollback.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import _common as common  # noqa: E402

from churn_platform.core.canary import (  # noqa: E402
    CanaryConfig,
    CanaryState,
    Collaborators,
    Rollout,
    run_canary,
)
from churn_platform.resources.metrics_source import PrometheusMetrics  # noqa: E402
from churn_platform.targets.local import LocalProcessTarget  # noqa: E402
from churn_platform.testing import (  # noqa: E402
    PROMETHEUS_BIN,
    PacedLoad,
    RegisteredModels,
    log_and_register,
    make_registered_models,
    start_prometheus,
    to_records,
)

RESULTS = common.result_path(__file__)
ENV = "production"
LOCAL_RPS = 25.0  # the production asset's synthetic_traffic_rps
SEED_BAR_S = 60.0  # the seed's rollback bar
TARGET_S = 10.0  # the target
IN_FLIGHT_S = 0.5  # a request sent just before the switch may still reach the candidate


def configs() -> dict[str, tuple[CanaryConfig, float, str]]:
    """name -> (canary config, client requests/s, description)."""
    return {
        "shadow": (
            CanaryConfig(),
            LOCAL_RPS,
            "`CanaryConfig()` defaults: the shadow step, then the sequential test",
        ),
        "sequential": (
            CanaryConfig(shadow=False),
            LOCAL_RPS,
            "the sequential test without the shadow step (the default before it)",
        ),
        "count": (
            CanaryConfig(
                shadow=False,
                analysis="count",
                analysis_window_seconds=15.0,
                min_requests=20,
                breach_min_requests=5,
                max_unreachable_readings=None,
            ),
            LOCAL_RPS,
            "the earlier count rule as the asset shipped it",
        ),
    }


@dataclass
class Trial:
    """One faulty canary and what the clients saw."""

    config: str
    candidate: str
    status: str
    onset_to_restored_s: float | None
    decision_to_restored_s: float | None
    last_5xx_after_onset_s: float | None
    first_5xx_after_onset_s: float | None
    breach_step: int | None
    breach_error_rate: float | None
    breach_requests: float | None
    requests: int  # through the router from onset to rollback (+ in-flight margin)
    to_candidate: int
    failed: int
    failed_in_release: int  # client errors from the release's start to its end
    requests_in_release: int  # client requests from the release's start to its end
    expected_failed: float  # step share x fault rate x requests
    failed_after_rollback: int  # after rollback + IN_FLIGHT_S, until the client stopped
    load: float


def run_trial(
    target: LocalProcessTarget,
    metrics: PrometheusMetrics,
    models: RegisteredModels,
    name: str,
    config: CanaryConfig,
    rate: float,
    fault_rate: float,
    seed: int,
) -> Trial:
    """Deploy a fresh faulty candidate beside the champion and run the canary on it."""
    state = target.state(ENV)
    baseline = next(v for v, w in state.weights().items() if w == 100)
    candidate = log_and_register(models.pipelines["2"], models.rows, models.tracking_uri)
    target.deploy(
        ENV,
        candidate,
        f"models:/churn_model/{candidate}",
        extra_env={"CHURN_FAULT_RATE": str(fault_rate), "CHURN_FAULT_SEED": str(seed)},
    )
    try:
        if not metrics.wait_until_scraped(candidate):
            raise RuntimeError(f"Prometheus did not scrape candidate v{candidate} within 30 s")
        rows = to_records(models.rows.head(200))
        with PacedLoad(state.endpoint, rows, rate=rate, one_by_one=True) as load:
            result = run_canary(
                Collaborators(target, metrics), Rollout(ENV, candidate, baseline), config
            )
            time.sleep(2.0)  # traffic after the rollback must be clean
        weights = target.state(ENV).weights()
    finally:
        target.retire(ENV, candidate)
    if weights.get(baseline) != 100:
        raise RuntimeError(f"after the canary the weights are {weights}, not 100% on {baseline}")
    # the candidate's first requests: the mirror's start, else its first traffic share
    onset = next(
        t.at
        for t in result.transitions
        if t.to_state in (CanaryState.SHADOWING, CanaryState.PROGRESSING)
    )
    start, end = result.transitions[0].at, result.transitions[-1].at
    breach = result.breach
    during = [(t, s, v) for t, s, v in load.results if onset <= t <= end + IN_FLIGHT_S]
    errors = [t for t, s, _ in load.results if s != 200 and t >= onset]
    # expected failures: each request in a step goes to the candidate with the step's share
    expected = 0.0
    steps = [  # the step starts (a passed step is analysing -> progressing)
        t
        for t in result.transitions
        if t.to_state is CanaryState.PROGRESSING and t.from_state is not CanaryState.ANALYSING
    ]
    for i, t in enumerate(steps):
        stop = steps[i + 1].at if i + 1 < len(steps) else end
        count = sum(1 for at, _, _ in load.results if t.at <= at <= stop)
        expected += count * (t.step or 0) / 100 * fault_rate
    return Trial(
        config=name,
        candidate=candidate,
        status=str(result.status),
        onset_to_restored_s=(breach.at - onset) if breach else None,
        decision_to_restored_s=result.rollback_seconds,
        last_5xx_after_onset_s=(max(errors) - onset) if errors else None,
        first_5xx_after_onset_s=(min(errors) - onset) if errors else None,
        breach_step=breach.step if breach else None,
        breach_error_rate=breach.reading.error_rate if breach and breach.reading else None,
        breach_requests=breach.reading.request_count if breach and breach.reading else None,
        requests=len(during),
        to_candidate=sum(1 for _, _, v in during if v == candidate),
        failed=sum(1 for _, s, _ in during if s != 200),
        failed_in_release=sum(1 for t, s, _ in load.results if s != 200 and start <= t <= end),
        requests_in_release=sum(1 for t, _, _ in load.results if start <= t <= end),
        expected_failed=expected,
        failed_after_rollback=sum(
            1 for t, s, _ in load.results if s != 200 and t > end + IN_FLIGHT_S
        ),
        load=os.getloadavg()[0],
    )


def _stats(values: list[float | None]) -> tuple[str, str]:
    real = [v for v in values if v is not None]
    if not real:
        return "n/a", "n/a"
    return f"{statistics.median(real):.2f}", f"{max(real):.2f}"


def _step_text(step: int | None) -> str:
    if step is None:
        return "n/a"
    return "shadow" if step == 0 else f"{step}%"


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def render(
    trials: list[Trial],
    args: argparse.Namespace,
    command: str,
    load_before: tuple[float, ...],
    prometheus_version: str,
) -> str:
    cfgs = configs()
    lines = [
        "# Canary rollback time against a real Prometheus",
        "",
        f"- date: {common.utc_now()}",
        f"- command: `{command}`",
        f"- machine: {os.cpu_count()} cores visible ({platform.processor() or platform.machine()})"
        f"; load average before {common.load_text(load_before)}"
        f", after {common.load_text()}",
        f"- python {platform.python_version()}, {prometheus_version}, "
        + common.versions_text("prometheus-api-client", "httpx", "uvicorn", "prometheus-client"),
        f"- set-up: `/usr/bin/prometheus`, scrape interval 1 s, file_sd targets written by "
        f"`LocalProcessTarget`; champion: logistic pipeline v1 (healthy); candidate: a fresh "
        f"registration of pipeline 2 per trial with `CHURN_FAULT_RATE={args.fault_rate}`; "
        "single-record `/predict` requests (200 holdout rows, cycling) through the local router "
        "from a paced client (`churn_platform.testing.PacedLoad`); `core.canary.run_canary` with `PrometheusMetrics` "
        "(`environment=production`); the candidate had been scraped >= 3 times before each "
        "canary (`wait_until_scraped`, as the asset does).",
        "",
    ]
    for name in args.config:
        config, rate, what = cfgs[name]
        mine = [t for t in trials if t.config == name]
        if not mine:
            continue
        a = _stats([t.onset_to_restored_s for t in mine])
        b = _stats([t.decision_to_restored_s for t in mine])
        c = _stats([t.last_5xx_after_onset_s for t in mine])
        rolled = sum(t.status == str(CanaryState.ROLLED_BACK) for t in mine)
        worst = max((t.onset_to_restored_s or float("inf")) for t in mine)
        lines += [
            f"## `{name}` configuration: {what}",
            "",
            f"{'Shadow step (all requests mirrored), then s' if config.shadow else 'S'}teps "
            f"{' -> '.join(f'{s}%' for s in config.steps)}, analysis `{config.analysis}`, "
            f"step time {config.analysis_window_seconds:g} s, a reading every "
            f"{config.interval_seconds:g} s, bound {config.max_error_rate:.0%}; client {rate:g} "
            f"requests/s. {len(mine)} trials, {rolled} rolled back.",
            "",
            "| measure | median s | max s | seed's bar (< 60 s) | target (< 10 s) |",
            "|---|---:|---:|---|---|",
            f"| (a) breach onset -> release ended on the champion only | {a[0]} | {a[1]} | "
            f"{'met' if worst < SEED_BAR_S else 'NOT met'} (max) | "
            f"{'met' if worst < TARGET_S else 'NOT met'} (max) |",
            f"| (b) rollback decision -> weights restored (shadow: mirror off) | {b[0]} "
            f"| {b[1]} | | |",
            f"| (c) last 5xx seen by clients, after onset | {c[0]} | {c[1]} | | |",
            "",
            f"Errors seen by the clients from the release's start to its end: "
            f"{sum(t.failed_in_release for t in mine)} of "
            f"{sum(t.requests_in_release for t in mine)} requests; breach in the shadow step: "
            f"{sum(t.breach_step == 0 for t in mine)} of {len(mine)} trials.",
            "",
            "| trial | candidate | outcome | (a) s | (b) ms | (c) s | first 5xx s | breach "
            "at step | breach reading | requests onset -> rollback (+0.5 s in flight) | to candidate | failed | "
            "expected from the canary's share | failed after rollback | load (1 min) |",
            "|---:|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for i, t in enumerate(mine, 1):
            reading = (
                f"{t.breach_error_rate:.1%} of {t.breach_requests:.0f}"
                if t.breach_error_rate is not None and t.breach_requests is not None
                else "n/a"
            )
            decision_ms = (
                f"{t.decision_to_restored_s * 1000:.1f}"
                if t.decision_to_restored_s is not None
                else "n/a"
            )
            lines.append(
                f"| {i} | v{t.candidate} | {t.status} | {_fmt(t.onset_to_restored_s)} | "
                f"{decision_ms} | {_fmt(t.last_5xx_after_onset_s)} | "
                f"{_fmt(t.first_5xx_after_onset_s)} | {_step_text(t.breach_step)} | {reading} | "
                f"{t.requests} | {t.to_candidate} | {t.failed} | {t.expected_failed:.1f} | "
                f"{t.failed_after_rollback} | {t.load:.2f} |"
            )
        total_req = sum(t.requests for t in mine)
        total_failed = sum(t.failed for t in mine)
        total_expected = sum(t.expected_failed for t in mine)
        lines += [
            "",
            f"Failed requests through the router during the canaries: {total_failed} of "
            f"{total_req} ({total_failed / max(total_req, 1):.2%}); the canary's share predicts "
            f"{total_expected:.1f} ({total_expected / max(total_req, 1):.2%} = step share x "
            f"{args.fault_rate:.0%}). After the rollback (+{IN_FLIGHT_S:g} s in flight): "
            f"{sum(t.failed_after_rollback for t in mine)} failed.",
            "",
        ]
    lines += [
        "How to read it: (a) is dominated by waiting for evidence (the candidate's first "
        "500s, then enough requests in Prometheus for a reading to count), not by the switch "
        "itself, which (b) shows takes milliseconds (one `PUT` to the router). In the shadow "
        "step the candidate gets a copy of every request, so the evidence comes at the full "
        "traffic rate instead of the 5% step's, and no client is answered by it: (a) is then "
        "time with the mirror on, not time clients live through, and (c) is n/a. Without the "
        "shadow (a) is what a user of the service lives through. With a 1 s scrape interval "
        "the reading lags the requests by up to ~1-2 s (scrape + `rate()` needing two "
        "samples). (c) can exceed (a) by the in-flight requests only.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the trials and write the markdown results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5, help="trials per configuration")
    parser.add_argument("--quick", action="store_true", help="2 trials, shadow only")
    parser.add_argument(
        "--config",
        nargs="+",
        choices=("shadow", "sequential", "count"),
        default=["shadow", "sequential", "count"],
    )
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.config = 2, ["shadow"]
    command = common.command_line(__file__)
    if not Path(PROMETHEUS_BIN).exists():
        sys.exit(f"{PROMETHEUS_BIN} not found: apt-get install prometheus")
    prometheus_version = subprocess.run(
        [PROMETHEUS_BIN, "--version"], capture_output=True, text=True
    ).stdout.splitlines()[0]
    prometheus_version = prometheus_version.replace("prometheus, version", "prometheus").split(
        " ("
    )[0]
    load_before = os.getloadavg()
    cfgs = configs()
    trials: list[Trial] = []
    with tempfile.TemporaryDirectory(prefix="bench-rollback-") as tmp:
        work = Path(tmp)
        cwd = os.getcwd()
        os.chdir(work)  # the default artifact root of a sqlite store is ./mlruns
        try:
            models = make_registered_models(work / "mlflow")
        finally:
            os.chdir(cwd)
        target = LocalProcessTarget(
            work / "deployments", models.tracking_uri, inference_log_dir=work / "inference_log"
        )
        prom_config = target.write_prometheus_config(work / "prometheus.yml", scrape_interval="1s")
        try:
            with start_prometheus(prom_config, work) as prometheus:
                metrics = PrometheusMetrics(prometheus.url, label_filters={"environment": ENV})
                target.deploy(ENV, "1", models.model_uris["1"])
                target.set_weights(ENV, {"1": 100})
                if not metrics.wait_until_scraped("1"):
                    raise RuntimeError("Prometheus did not scrape the champion within 30 s")
                seed = 0
                for name in args.config:
                    config, rate, _ = cfgs[name]
                    for i in range(args.trials):
                        seed += 1
                        t = run_trial(
                            target, metrics, models, name, config, rate, args.fault_rate, seed
                        )
                        trials.append(t)
                        print(
                            f"[{name} {i + 1}/{args.trials}] v{t.candidate} {t.status}: onset -> "
                            f"restored {_fmt(t.onset_to_restored_s)} s, decision -> restored "
                            f"{_fmt(t.decision_to_restored_s, '.3f')} s, last 5xx "
                            f"{_fmt(t.last_5xx_after_onset_s)} s; failed {t.failed}/{t.requests} "
                            f"(expected {t.expected_failed:.1f}); load {t.load:.2f}",
                            flush=True,
                        )
        finally:
            with contextlib.suppress(Exception):
                target.stop_all()
    text = render(trials, args, command, load_before, prometheus_version)
    common.write_result(args.out, text, announce=True)


if __name__ == "__main__":
    main()
