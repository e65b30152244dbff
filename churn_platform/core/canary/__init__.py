"""The canary controller: an explicit rollout state machine over any ``DeploymentTarget``.

Modelled on Flagger / Argo Rollouts. A rollout moves through these states::

    pending ──► progressing ──► analysing ──► progressing (next step) ... ──► promoting ──► succeeded
                                   │  (one analysing row per reading)
                                   ├── the test shows the rate above the bound, p95 latency
                                   │   above the bound, or the candidate/router died ─► rolled_back
                                   └── undecided when the step's time ran out, no data,
                                       metrics unreachable, or the baseline fails as
                                       much as the candidate (shared dependency) ──────► aborted

At each step (``analysis="sequential"``, the default) the candidate's requests and errors
since the step began are read every ``interval_seconds`` and fed to Wald's sequential
probability ratio test (``Sprt``) of "rate = max_error_rate / sprt_ratio" against "rate =
max_error_rate * sprt_ratio": the step rolls back as soon as the counts show the rate is
above the bound, passes as soon as they show it is below, and aborts when
``analysis_window_seconds`` run out undecided. Before blaming the candidate its rate is
compared with the baseline's over the same window (``blames_candidate``); the candidate's
p95 latency is compared with the baseline's when a step passes. ``analysis="count"`` keeps
the earlier rule (a reading above the bound with ``breach_min_requests`` rolls back, a
window end with ``min_requests`` passes) for comparison.

``rolled_back`` and ``aborted`` both put 100% of the traffic back on the baseline;
they differ in cause: a breach is evidence that the candidate is bad, an abort only
says the analysis could not show it is good. The caller retires the candidate.

Every reading and every transition is recorded (``Transition``) with its time, the
weights after it, the candidate's and the baseline's readings and the test statistic,
and a sentence saying why, so the Dagster run log and asset metadata read like a Flagger
event stream. Pure logic: no Dagster, MLflow or Kubernetes; time is injected (``sleep``,
``clock`` in ``Collaborators``) so tests run instantly.

One job per module: ``config`` (``CanaryConfig`` and its validation), ``statistics`` (the
sequential test, the baseline comparison, the latency bound), ``machine`` (``run_canary``),
``sequential`` and ``count_rule`` (the two step analyses over what ``step`` shares), ``report``
(transitions, the result, their text).
"""

from churn_platform.core.canary.config import (
    ANALYSIS_MODES,
    SCHEMA_CHANGE_MODES,
    AnalysisMode,
    CanaryConfig,
    SchemaChangeMode,
)
from churn_platform.core.canary.machine import Rollout, run_canary
from churn_platform.core.canary.report import (
    CanaryResult,
    Transition,
    release_line,
    steps_summary,
)
from churn_platform.core.canary.state import CanaryState
from churn_platform.core.canary.statistics import (
    Sprt,
    Verdict,
    blames_candidate,
    latency_problem,
)
from churn_platform.core.canary.step import UNREACHABLE, Collaborators

__all__ = [
    "ANALYSIS_MODES",
    "SCHEMA_CHANGE_MODES",
    "UNREACHABLE",
    "AnalysisMode",
    "CanaryConfig",
    "CanaryResult",
    "CanaryState",
    "Collaborators",
    "Rollout",
    "SchemaChangeMode",
    "Sprt",
    "Transition",
    "Verdict",
    "blames_candidate",
    "latency_problem",
    "release_line",
    "run_canary",
    "steps_summary",
]
