"""What one step hands the next, as frozen records, and the names every layer shares.

Assets pass these records to each other (the IO manager stores them as JSON, so every
field is a plain JSON type). The registry aliases, version tags, environments, actions
and check names are written here once; code compares against these constants, never
against a string typed again somewhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Registry aliases (see README "Registry aliases"): an alias moves only after the step
# that justifies it succeeded.
CHALLENGER = "challenger"  # newest version that passed its model checks
CHAMPION = "champion"  # the version serving 100% of production
PREVIOUS = "previous"  # the N-1 champion, kept running for rollback

# Tags on registered versions.
TAG_MODEL_CHECKS = "model_checks"  # "passed" / "failed"
TAG_GATE_DECISION = "gate_decision"  # "promote" / "keep"
TAG_SPEC_HASH = "spec_hash"  # sha256 of the spec the version was trained with
TAG_DEPLOYMENT = "deployment"  # "production" / "rolled_back: <reason>"

# Environments a deployment target serves.
STAGING = "staging"
PRODUCTION = "production"

# Actions recorded by the deployment steps.
DEPLOY = "deploy"
NO_ACTION = "none"
PROMOTED = "promoted"
REFUSED = "refused"  # a schema-breaking candidate not released (core.schema_change)

# Check names (the Dagster UI shows them; tests and code refer to these constants).
FEATURE_INVARIANTS = "feature_invariants"
HOLDOUT_AUC = "holdout_auc"
SLICE_AUC = "slice_auc"
CONTRACT_INVARIANCE = "contract_invariance"
PREDICTION_COVERAGE = "prediction_coverage"
PROMOTION_GATE = "promotion_gate"
HEALTH = "health"
ENVIRONMENT_PARITY = "environment_parity"
API_CONTRACT = "api_contract"
LATENCY = "latency"
ONLINE_OFFLINE_PARITY = "online_offline_parity"
CANARY_ANALYSIS = "canary_analysis"
REGISTRY_ALIASES = "registry_aliases"

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class ChallengerModel:
    """A registered version that passed every model check (``challenger_model``'s value)."""

    model_name: str
    version: str
    model_uri: str  # models:/<name>/<version>
    run_id: str
    experiment_id: str
    data_version: str  # content hash of the snapshot it was trained on
    holdout_hash: str  # hash of the holdout its checks ran on
    metrics: dict[str, float]
    checks_passed: bool
    params: dict[str, Scalar]


@dataclass(frozen=True)
class EvaluationDecision:
    """The promotion gate's verdict on one challenger (``evaluation_report``'s value)."""

    promote: bool
    reason: str  # a sentence a person can read, with the numbers
    challenger_version: str
    challenger_model_uri: str
    champion_version: str | None  # None when there was no champion to compare with
    holdout_hash: str
    rule: str  # the gate mode that decided: "interval" or "point"

    @property
    def verdict(self) -> str:
        """'promote' or 'keep' (the word the UI, the tags and the logs show)."""
        return "promote" if self.promote else "keep"


@dataclass(frozen=True)
class StagingResult:
    """What staging did (``staging_deployment``'s value).

    action: ``DEPLOY`` (the candidate runs in staging and passed its integration checks)
    or ``NO_ACTION`` (the gate kept the champion; ``reason`` says why).
    """

    action: str
    candidate: str | None = None
    model_uri: str | None = None
    baseline: str | None = None  # the champion serving staging beside the candidate
    reason: str = ""


@dataclass(frozen=True)
class ProductionResult:
    """What the release did (``production_deployment``'s value).

    action: ``NO_ACTION`` (nothing to release), ``PROMOTED``, ``REFUSED`` (the candidate
    requires request fields the champion's clients do not send), or the canary's terminal
    state when it did not promote (``rolled_back`` or ``aborted``). ``champion`` and
    ``previous`` are the registry aliases after the release.
    """

    action: str
    candidate: str | None
    champion: str | None
    previous: str | None
    reason: str


@dataclass(frozen=True)
class SparkDataset:
    """A week's rows kept by the Spark engine as a Parquet dataset in the platform's storage
    (``churn_snapshot``'s and ``validated_churn_data``'s value with ``CHURN_ENGINE=spark``).

    ``kind``: ``snapshot`` (the mapped rows with the mapping's per-row flag columns, which
    the Spark contract counts) or ``validated`` (the typed rows of a week that passed).
    ``path``: the dataset's folder (a local path or ``s3://...``); ``data_version``: the
    Spark engine's hash of the row multiset; ``mapping``: how ``map_on_spark`` mapped the
    rows (the spec columns present, their source and target types, renames, dropped and
    value-mapped columns), empty for validated rows.
    """

    kind: str
    path: str
    week: str
    rows: int
    data_version: str
    spec_hash: str
    mapping: dict[str, Any] = field(default_factory=dict)
