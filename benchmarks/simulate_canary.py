"""Simulate the canary analysis: how fast does it roll back a bad canary, and how often
does it roll back a healthy one? The sequential test (default) beside the earlier count rule.

Each trial drives the real controller (``core.canary.run_canary``) on a simulated clock.
Traffic is a Poisson stream of ``rps`` requests per second through the router; each
request goes to the candidate with the candidate's current weight and fails with its
version's error probability. A reading over a look-back of ``w`` seconds counts the
version's requests and failures in the last ``w`` seconds, as a scrape or a Prometheus
``increase()`` would (without Prometheus's scrape lag, which adds about one scrape
interval to every figure).

Scenarios, both at the local default traffic (25 requests/s, steps 5 -> 25 -> 100%):

* a bad canary failing 20% of its requests against a baseline failing 1%: how many canary
  requests and how many seconds after the 5% step began it is rolled back;
* a healthy canary with the baseline's 1% background error rate: the share of rollouts
  that end in a false rollback, or in an abort (not released), and how long a release takes.

Rules: ``sequential`` is ``CanaryConfig()`` (the default); ``count`` is the earlier rule
with the values the production asset shipped (15 s window, ``min_requests`` 20,
``breach_min_requests`` 5).

Run:  .venv/bin/python benchmarks/simulate_canary.py [--quick] [--trials N]
Writes benchmarks/results/simulate_canary.md.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import _common as common  # noqa: E402

from churn_platform.core.canary import (  # noqa: E402
    CanaryConfig,
    CanaryResult,
    CanaryState,
    Collaborators,
    Rollout,
    run_canary,
)
from churn_platform.core.rollout import EnvironmentState, ErrorRate, ServedVersion  # noqa: E402

CANDIDATE, BASELINE = "2", "1"
RULES: dict[str, CanaryConfig] = {
    "sequential (default)": CanaryConfig(),
    "count (earlier rule)": CanaryConfig(
        analysis="count",
        analysis_window_seconds=15.0,
        min_requests=20,
        breach_min_requests=5,
        max_unreachable_readings=None,
    ),
}


class SimulatedClock:
    """Time that moves only when the controller sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class SimulatedTraffic:
    """A router, two versions and their traffic on the simulated clock; both a
    ``DeploymentTarget`` and a ``MetricsSource``."""

    def __init__(
        self,
        clock: SimulatedClock,
        rps: float,
        error_rates: dict[str, float],
        rng: np.random.Generator,
    ) -> None:
        self.clock, self.rps, self.error_rates, self.rng = clock, rps, error_rates, rng
        self.weights = {BASELINE: 100, CANDIDATE: 0}
        self.simulated_until = 0.0
        self.events: dict[str, tuple[list[float], list[bool]]] = {v: ([], []) for v in error_rates}

    def _advance(self) -> None:
        """Generate the requests between the last reading and now, at the current weights."""
        span = self.clock.now - self.simulated_until
        if span <= 0:
            return
        n = int(self.rng.poisson(self.rps * span))
        times = np.sort(self.rng.uniform(self.simulated_until, self.clock.now, n))
        to_candidate = self.rng.random(n) < self.weights[CANDIDATE] / 100
        for version, mask in ((CANDIDATE, to_candidate), (BASELINE, ~to_candidate)):
            k = int(mask.sum())
            failed = self.rng.random(k) < self.error_rates[version]
            self.events[version][0].extend(times[mask].tolist())
            self.events[version][1].extend(failed.tolist())
        self.simulated_until = self.clock.now

    # DeploymentTarget
    def deploy(self, environment: str, version: str, model_uri: str) -> ServedVersion:
        raise NotImplementedError("both versions run from the start")

    def set_weights(self, environment: str, weights: dict[str, int]) -> EnvironmentState:
        self._advance()  # requests so far went by the old weights
        self.weights = {v: weights.get(v, 0) for v in self.weights}
        return self.state(environment)

    def state(self, environment: str) -> EnvironmentState:
        return EnvironmentState(
            environment,
            "http://router",
            tuple(ServedVersion(v, "", f"http://{v}", w) for v, w in self.weights.items()),
        )

    def retire(self, environment: str, version: str) -> None:
        raise NotImplementedError

    # MetricsSource
    def error_rate(self, version: str, window_seconds: float) -> ErrorRate:
        self._advance()
        times, failed = self.events[version]
        start = self.clock.now - window_seconds
        i = int(np.searchsorted(times, start, side="right"))
        n = len(times) - i
        if n == 0:
            return ErrorRate(version, None, 0.0, "simulated", "no requests in the window")
        errors = sum(failed[i:])
        return ErrorRate(version, errors / n, float(n), "simulated")

    def requests_to(self, version: str, since: float, until: float) -> int:
        times = self.events[version][0]
        return int(
            np.searchsorted(times, until, side="right") - np.searchsorted(times, since, "right")
        )


@dataclass
class Trial:
    status: CanaryState
    seconds: float  # first step's start -> the terminal transition
    candidate_requests: int  # canary requests served before the terminal transition


def one_trial(config: CanaryConfig, rps: float, candidate_rate: float, seed: int) -> Trial:
    """One simulated rollout; the baseline fails 1% of its requests."""
    clock = SimulatedClock()
    traffic = SimulatedTraffic(
        clock, rps, {BASELINE: 0.01, CANDIDATE: candidate_rate}, np.random.default_rng(seed)
    )
    result: CanaryResult = run_canary(
        Collaborators(traffic, traffic, sleep=clock.sleep, clock=clock),
        Rollout("sim", CANDIDATE, BASELINE),
        config,
    )
    end = result.transitions[-1].at
    return Trial(result.status, end, traffic.requests_to(CANDIDATE, 0.0, end))


@dataclass
class Summary:
    rule: str
    scenario: str
    trials: list[Trial]

    def share(self, status: CanaryState) -> float:
        return sum(t.status is status for t in self.trials) / len(self.trials)

    def among(self, status: CanaryState) -> list[Trial]:
        return [t for t in self.trials if t.status is status]


def _median_p95(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return f"{statistics.median(ordered):.0f} / {p95:.0f}"


def main(argv: list[str] | None = None) -> None:
    """Run both scenarios under both rules and write the markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 trials per cell")
    parser.add_argument("--trials", type=int, default=None, help="trials per cell")
    parser.add_argument("--rps", type=float, default=25.0, help="requests/s through the router")
    parser.add_argument("--out", type=Path, default=common.result_path(__file__))
    args = parser.parse_args(argv)
    trials = args.trials or (100 if args.quick else 1_000)

    started = time.perf_counter()
    bad: dict[str, Summary] = {}
    healthy: dict[str, Summary] = {}
    for name, config in RULES.items():
        bad[name] = Summary(
            name, "20% 5xx", [one_trial(config, args.rps, 0.20, 10_000 + i) for i in range(trials)]
        )
        healthy[name] = Summary(
            name, "1% 5xx", [one_trial(config, args.rps, 0.01, 20_000 + i) for i in range(trials)]
        )
        print(
            f"{name}: bad rolled back {bad[name].share(CanaryState.ROLLED_BACK):.1%}, "
            f"healthy false rollbacks {healthy[name].share(CanaryState.ROLLED_BACK):.1%}, "
            f"healthy released {healthy[name].share(CanaryState.SUCCEEDED):.1%}"
        )
    seconds = time.perf_counter() - started

    cmd = common.command_line(__file__, ["--quick"] if args.quick else [])
    lines = [
        "# Canary analysis simulation: the sequential test vs the earlier count rule",
        "",
        f"Command: `{cmd}`" + (f" (trials={args.trials})" if args.trials else ""),
        "",
        f"Setup: the real `core.canary.run_canary` on a simulated clock; Poisson traffic of "
        f"{args.rps:g} requests/s through the router, steps 5 -> 25 -> 100%, readings every "
        "1 s; the baseline fails 1% of its requests. No scrape lag (Prometheus adds about one "
        f"scrape interval). {trials} rollouts per cell; shares with a 95% Wilson interval.",
        "",
        "## A bad canary (20% of its requests fail)",
        "",
        "| rule | rolled back | aborted | released | canary requests to roll back "
        "(median / p95) | seconds from the 5% step to rollback (median / p95) |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in bad.items():
        back = s.among(CanaryState.ROLLED_BACK)
        lines.append(
            f"| {name} | {s.share(CanaryState.ROLLED_BACK):.1%} | {s.share(CanaryState.ABORTED):.1%} "
            f"| {s.share(CanaryState.SUCCEEDED):.1%} "
            f"| {_median_p95([t.candidate_requests for t in back])} "
            f"| {_median_p95([t.seconds for t in back])} |"
        )
    lines += [
        "",
        "## A healthy canary (1% background error rate, like the baseline)",
        "",
        "| rule | false rollback | aborted (not released) | released | seconds to release "
        "(median / p95) |",
        "|---|---|---|---|---|",
    ]
    for name, s in healthy.items():
        k = len(s.among(CanaryState.ROLLED_BACK))
        lo, hi = common.wilson_interval(k, trials)
        lines.append(
            f"| {name} | {k / trials:.1%} [{lo:.1%}, {hi:.1%}] "
            f"| {s.share(CanaryState.ABORTED):.1%} | {s.share(CanaryState.SUCCEEDED):.1%} "
            f"| {_median_p95([t.seconds for t in s.among(CanaryState.SUCCEEDED)])} |"
        )
    default = RULES["sequential (default)"]
    lines += [
        "",
        f"Sequential test: H0 rate {default.max_error_rate / default.sprt_ratio:.2%} vs H1 rate "
        f"{default.max_error_rate * default.sprt_ratio:.2%} (bound {default.max_error_rate:.0%}, "
        f"ratio {default.sprt_ratio:g}), false_rollback_rate {default.false_rollback_rate}, "
        f"missed_breach_rate {default.missed_breach_rate}, step bound "
        f"{default.analysis_window_seconds:g} s.",
        "",
        f"Machine: {common.platform_text()} (load average at the end "
        f"{os.getloadavg()[0]:.2f}), Python {platform.python_version()}, "
        f"{common.versions_text('numpy')}. Total time {seconds:.1f} s.",
        "",
    ]
    common.write_result(args.out, "\n".join(lines), echo=False, announce=True)


if __name__ == "__main__":
    main()
