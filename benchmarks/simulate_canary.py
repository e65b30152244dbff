"""Simulate the canary analysis: how fast does it roll back a bad canary, and how often
does it roll back a healthy one? The sequential test (default) beside the earlier count rule.

Each trial drives the real controller (``core.canary.run_canary``) on a simulated clock.
Traffic is a Poisson stream of ``rps`` requests per second through the router; each
request goes to the candidate with the candidate's current weight and fails with its
version's error probability. A reading over a look-back of ``w`` seconds counts the
version's requests and failures in the last ``w`` seconds, as a scrape or a Prometheus
``increase()`` would (without Prometheus's scrape lag, which adds about one scrape
interval to every figure).

The shadow step is simulated the same way: while the router mirrors, every request (the
configured share of them) also goes to the candidate, which fails it with its error
probability; the client is answered by the baseline. Each mirrored request the candidate
answers gives a pair of scores: the baseline's ``z`` on the logit scale ~ N(-1.4, 1.2), the
candidate's ``z + N(0, 0.25)`` (a retrained model ranking the customers nearly alike;
rank correlation about 0.98, the real v1/v2 test pair measures 0.997), or, for a candidate
with shuffled scores, an independent draw from the same distribution. Latencies are not
simulated (the latency check does not run here).

Scenarios, all at the local default traffic (25 requests/s, steps 5 -> 25 -> 100%):

* a bad canary failing 20% of its requests against a baseline failing 1%: how many
  candidate requests (mirrored or served) and how many seconds after the release began it
  is rolled back, and how many client requests it answered first;
* a healthy canary with the baseline's 1% background error rate: the share of rollouts
  that end in a false rollback, or in an abort (not released), and how long a release takes;
* a candidate with shuffled scores and the baseline's 1% errors: the share stopped.

Rules: ``shadow + sequential`` is ``CanaryConfig()`` (the default); ``sequential`` the same
without the shadow step (the default before it); ``count`` is the earlier rule with the
values the production asset shipped (15 s window, ``min_requests`` 20,
``breach_min_requests`` 5), without the shadow step.

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
from churn_platform.core.rollout import (  # noqa: E402
    EnvironmentState,
    ErrorRate,
    ServedVersion,
    ShadowObservations,
)

CANDIDATE, BASELINE = "2", "1"
DEFAULT_RULE = "shadow + sequential (default)"
RULES: dict[str, CanaryConfig] = {
    DEFAULT_RULE: CanaryConfig(),
    "sequential, no shadow": CanaryConfig(shadow=False),
    "count (earlier rule)": CanaryConfig(
        shadow=False,
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
        shuffled: bool = False,
    ) -> None:
        self.clock, self.rps, self.error_rates, self.rng = clock, rps, error_rates, rng
        self.shuffled = shuffled
        self.weights = {BASELINE: 100, CANDIDATE: 0}
        self.simulated_until = 0.0
        self.events: dict[str, tuple[list[float], list[bool]]] = {v: ([], []) for v in error_rates}
        self.mirror_percent = 0  # 0: not mirroring
        self.mirrored = 0
        self.mirror_errors = 0
        self.pairs: tuple[list[float], list[float]] = ([], [])
        self.served_by_candidate = 0  # client requests the candidate answered

    def _advance(self) -> None:
        """Generate the requests between the last reading and now, at the current weights
        (and copies of them to the candidate while mirroring)."""
        span = self.clock.now - self.simulated_until
        if span <= 0:
            return
        n = int(self.rng.poisson(self.rps * span))
        times = np.sort(self.rng.uniform(self.simulated_until, self.clock.now, n))
        to_candidate = self.rng.random(n) < self.weights[CANDIDATE] / 100
        copied = ~to_candidate & (self.rng.random(n) < self.mirror_percent / 100)
        self.served_by_candidate += int(to_candidate.sum())
        for version, mask in ((CANDIDATE, to_candidate | copied), (BASELINE, ~to_candidate)):
            k = int(mask.sum())
            failed = self.rng.random(k) < self.error_rates[version]
            self.events[version][0].extend(times[mask].tolist())
            self.events[version][1].extend(failed.tolist())
            if version == CANDIDATE:
                self._pair(failed[copied[mask]])
        self.simulated_until = self.clock.now

    def _pair(self, failed: np.ndarray) -> None:
        """Scores of the mirrored requests the candidate answered (see the docstring)."""
        self.mirrored += len(failed)
        self.mirror_errors += int(failed.sum())
        k = int((~failed).sum())
        z = self.rng.normal(-1.4, 1.2, k)
        other = self.rng.normal(-1.4, 1.2, k) if self.shuffled else z + self.rng.normal(0, 0.25, k)
        self.pairs[0].extend((1 / (1 + np.exp(-z))).tolist())
        self.pairs[1].extend((1 / (1 + np.exp(-other))).tolist())

    # ShadowTarget
    def set_mirror(self, environment: str, version: str | None, percent: int = 100) -> None:
        self._advance()  # requests so far went without (or with) the mirror
        self.mirror_percent = 0 if version is None else percent
        self.mirrored, self.mirror_errors, self.pairs = 0, 0, ([], [])

    def shadow_observations(self, environment: str) -> ShadowObservations | None:
        if not self.mirror_percent:
            return None
        self._advance()
        return ShadowObservations(
            CANDIDATE,
            self.mirrored,
            self.mirror_errors,
            tuple(self.pairs[0]),
            tuple(self.pairs[1]),
        )

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
    seconds: float  # the release's start (shadow or first step) -> the terminal transition
    candidate_requests: int  # requests the candidate got (mirrored or served) until then
    served: int  # client requests the candidate answered
    in_shadow: bool  # ended in the shadow step


def one_trial(
    config: CanaryConfig, rps: float, candidate_rate: float, seed: int, shuffled: bool = False
) -> Trial:
    """One simulated rollout; the baseline fails 1% of its requests."""
    clock = SimulatedClock()
    traffic = SimulatedTraffic(
        clock,
        rps,
        {BASELINE: 0.01, CANDIDATE: candidate_rate},
        np.random.default_rng(seed),
        shuffled,
    )
    result: CanaryResult = run_canary(
        Collaborators(traffic, traffic, sleep=clock.sleep, clock=clock),
        Rollout("sim", CANDIDATE, BASELINE),
        config,
    )
    last = result.transitions[-1]
    return Trial(
        result.status,
        last.at,
        traffic.requests_to(CANDIDATE, 0.0, last.at),
        traffic.served_by_candidate,
        last.step == 0,
    )


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
    """Run the three scenarios under the three rules and write the markdown tables."""
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
    shuffled: dict[str, Summary] = {}
    for name, config in RULES.items():
        bad[name] = Summary(
            name, "20% 5xx", [one_trial(config, args.rps, 0.20, 10_000 + i) for i in range(trials)]
        )
        healthy[name] = Summary(
            name, "1% 5xx", [one_trial(config, args.rps, 0.01, 20_000 + i) for i in range(trials)]
        )
        shuffled[name] = Summary(
            name,
            "shuffled",
            [one_trial(config, args.rps, 0.01, 30_000 + i, shuffled=True) for i in range(trials)],
        )
        print(
            f"{name}: bad rolled back {bad[name].share(CanaryState.ROLLED_BACK):.1%}, "
            f"healthy false rollbacks {healthy[name].share(CanaryState.ROLLED_BACK):.1%}, "
            f"healthy released {healthy[name].share(CanaryState.SUCCEEDED):.1%}, "
            f"shuffled released {shuffled[name].share(CanaryState.SUCCEEDED):.1%}"
        )
    seconds = time.perf_counter() - started

    cmd = common.command_line(__file__, ["--quick"] if args.quick else [])
    lines = [
        "# Canary analysis simulation: the shadow step, the sequential test, the earlier count rule",
        "",
        f"Command: `{cmd}`" + (f" (trials={args.trials})" if args.trials else ""),
        "",
        f"Setup: the real `core.canary.run_canary` on a simulated clock; Poisson traffic of "
        f"{args.rps:g} requests/s through the router, steps 5 -> 25 -> 100%, readings every "
        "1 s; the baseline fails 1% of its requests; in the shadow step every request is "
        "copied to the candidate and answered by the baseline, the paired scores simulated as "
        "in the script's docstring (latency not simulated). No scrape lag (Prometheus adds "
        f"about one scrape interval). {trials} rollouts per cell; shares with a 95% Wilson "
        "interval.",
        "",
        "## A bad canary (20% of its requests fail)",
        "",
        "| rule | rolled back | of which in shadow | aborted | released | candidate requests "
        "to roll back, mirrored or served (median / p95) | client requests the candidate "
        "answered (median / p95) | seconds from the release's start to rollback "
        "(median / p95) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in bad.items():
        back = s.among(CanaryState.ROLLED_BACK)
        lines.append(
            f"| {name} | {s.share(CanaryState.ROLLED_BACK):.1%} "
            f"| {sum(t.in_shadow for t in back) / len(s.trials):.1%} "
            f"| {s.share(CanaryState.ABORTED):.1%} "
            f"| {s.share(CanaryState.SUCCEEDED):.1%} "
            f"| {_median_p95([t.candidate_requests for t in back])} "
            f"| {_median_p95([t.served for t in back])} "
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
    lines += [
        "",
        "## A candidate with shuffled scores (no extra errors: 1% like the baseline)",
        "",
        "| rule | stopped (rolled back) | of which in shadow | aborted | released |",
        "|---|---|---|---|---|",
    ]
    for name, s in shuffled.items():
        back = s.among(CanaryState.ROLLED_BACK)
        lines.append(
            f"| {name} | {s.share(CanaryState.ROLLED_BACK):.1%} "
            f"| {sum(t.in_shadow for t in back) / len(s.trials):.1%} "
            f"| {s.share(CanaryState.ABORTED):.1%} | {s.share(CanaryState.SUCCEEDED):.1%} |"
        )
    default = RULES[DEFAULT_RULE]
    lines += [
        "",
        f"Sequential test: H0 rate {default.max_error_rate / default.sprt_ratio:.2%} vs H1 rate "
        f"{default.max_error_rate * default.sprt_ratio:.2%} (bound {default.max_error_rate:.0%}, "
        f"ratio {default.sprt_ratio:g}), false_rollback_rate {default.false_rollback_rate}, "
        f"missed_breach_rate {default.missed_breach_rate}, step bound "
        f"{default.analysis_window_seconds:g} s. Shadow step: {default.shadow_percent}% "
        f"mirrored, at least {default.shadow_min_pairs} paired scores, rank correlation >= "
        f"{default.shadow_min_rank_correlation:g}, top-decile agreement >= "
        f"{default.shadow_min_top_decile_agreement:g}, score PSI <= "
        f"{default.shadow_max_score_psi:g}.",
        "",
        f"Machine: {common.platform_text()} (load average at the end "
        f"{os.getloadavg()[0]:.2f}), Python {platform.python_version()}, "
        f"{common.versions_text('numpy')}. Total time {seconds:.1f} s.",
        "",
    ]
    common.write_result(args.out, "\n".join(lines), echo=False, announce=True)


if __name__ == "__main__":
    main()
