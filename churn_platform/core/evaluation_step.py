"""The ``evaluation_report`` step: score both models on the holdout, judge, and describe it.

Written against a small registry protocol (``VersionStore``), like ``core.release``, so the
step is unit-tested with an in-memory fake; the Dagster asset only reads its config, calls
these functions and turns their results into a check result and output metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd

from churn_platform.core import gate, report, slices, training
from churn_platform.core.records import CHALLENGER, CHAMPION, ChallengerModel
from churn_platform.core.spec import Spec


class VersionStore(Protocol):
    """What the step reads of the model registry."""

    def alias_version(self, alias: str) -> str | None:
        """The version an alias points at (None: no such alias)."""
        ...

    def spec_of_version(self, version: str) -> Spec:
        """The spec a registered version was trained with."""
        ...

    def load_model(self, version: str) -> Any:
        """A registered version's fitted pipeline."""
        ...

    def version_run_url(self, version: str) -> str:
        """Link to the run that logged a registered version."""
        ...


class UnscorableChallenger(ValueError):
    """The challenger's columns cannot be produced from the holdout (only a broken run)."""


@dataclass(frozen=True)
class Scoring:
    """Both models' scores on the holdout, and how their specs compare."""

    challenger: report.ScoredModel
    champion: report.ScoredModel | None
    champion_version: str | None  # None: no champion, or it is the challenger itself
    specs: report.SpecComparison

    @property
    def unscored_champion(self) -> str | None:
        """The champion's version when there is one but it could not be scored."""
        return self.champion_version if self.champion_version and self.champion is None else None

    @property
    def champion_warning(self) -> str | None:
        """The log line for a champion that could not be scored (None: nothing to say)."""
        if self.unscored_champion is None:
            return None
        return f"champion v{self.unscored_champion} cannot be scored: {self.specs.champion_problem}"


def fitted_columns(pipeline: Any, spec: Spec) -> list[str]:
    """The columns ``pipeline`` was fitted on (its spec's features when it does not say)."""
    names = getattr(pipeline, "feature_names_in_", None)
    return [str(c) for c in names] if names is not None else list(spec.feature_names)


def scored(
    store: VersionStore, role: str, version: str, pipeline: Any, rows: pd.DataFrame
) -> report.ScoredModel:
    """A registered version's scores on the holdout rows, labelled with its role."""
    return report.ScoredModel(
        label=f"{role} v{version}",
        version=version,
        scores=training.predict_proba(pipeline, rows),
        run_url=store.version_run_url(version),
    )


def score_models(
    store: VersionStore,
    holdout: pd.DataFrame,
    current: Spec,
    challenger_version: str,
    source_rows: Callable[[], pd.DataFrame],
) -> Scoring:
    """Challenger and champion scored on the same holdout, each with its own spec's columns.

    The champion is the ``champion`` alias unless that is the challenger itself
    (re-evaluating the serving model against itself says nothing). A champion column the
    current spec dropped is mapped from ``source_rows()`` (see ``report.inputs_for_spec``);
    a champion that cannot be scored is returned unscored with the reason in ``specs``.
    Raises ``UnscorableChallenger`` when the challenger's own columns are missing.
    """
    challenger_spec = store.spec_of_version(challenger_version)
    pipeline = store.load_model(challenger_version)
    inputs = report.inputs_for_spec(
        holdout, current, challenger_spec, fitted_columns(pipeline, challenger_spec)
    )
    if inputs.frame is None:
        raise UnscorableChallenger(
            f"challenger v{challenger_version} cannot be scored on the holdout: {inputs.problem}"
        )
    challenger = scored(store, CHALLENGER, challenger_version, pipeline, inputs.frame)
    champion_version = store.alias_version(CHAMPION)
    if champion_version == challenger_version:
        champion_version = None
    if not champion_version:
        return Scoring(challenger, None, None, report.SpecComparison(challenger=challenger_spec))
    champion_spec = store.spec_of_version(champion_version)
    pipeline = store.load_model(champion_version)
    columns = fitted_columns(pipeline, champion_spec)
    inputs = report.inputs_for_spec(holdout, current, champion_spec, columns, source_rows)
    specs = report.SpecComparison(
        challenger=challenger_spec,
        champion=champion_spec,
        derived=inputs.derived,
        champion_problem=inputs.problem,
    )
    champion = (
        None
        if inputs.frame is None
        else scored(store, CHAMPION, champion_version, pipeline, inputs.frame)
    )
    return Scoring(challenger, champion, champion_version, specs)


def judge(
    holdout: pd.DataFrame,
    current: Spec,
    model: ChallengerModel,
    scoring: Scoring,
    cfg: gate.GateConfig,
) -> report.Evaluation:
    """The gate's decision and report on ``scoring`` (labels from ``current``'s target)."""
    return report.evaluate(
        holdout[current.target_column].astype(int).to_numpy(),
        model,
        scoring.challenger,
        scoring.champion,
        slices.default_slices(holdout, current),
        cfg,
        specs=scoring.specs,
        unscored_champion=scoring.unscored_champion,
    )


def gate_metadata(found: report.Evaluation, cfg: gate.GateConfig) -> dict[str, Any]:
    """The promotion gate check's evidence."""
    gain = found.decision.minimum_detectable_gain
    return {
        "decision": found.record.verdict,
        "reason": found.record.reason,
        "rule": cfg.mode,
        "minimum_detectable_gain": gain if gain is not None else "n/a (no champion)",
    }


def report_markdown(found: report.Evaluation) -> str:
    """The report's markdown with its plots embedded."""
    plots = "\n\n".join(report.embed_png(p, n) for n, p in found.plots.items())
    return found.markdown + "\n\n" + plots


def report_metadata(
    found: report.Evaluation, scoring: Scoring, current: Spec, holdout_rows: int
) -> dict[str, Any]:
    """The evaluation report's output metadata as plain values: ``report`` is markdown and
    ``challenger_run`` / ``champion_run`` (present when the champion was scored) are links."""
    decision, specs = found.record, scoring.specs
    meta: dict[str, Any] = {
        "decision": decision.verdict,
        "reason": decision.reason,
        "challenger_version": decision.challenger_version,
        "champion_version": scoring.champion_version or "none",
        "holdout_hash": decision.holdout_hash,
        "holdout_rows": holdout_rows,
        "spec_hash": current.short_hash,
        "challenger_spec_hash": specs.challenger.short_hash,
        "champion_spec_hash": specs.champion.short_hash if specs.champion else "none",
        "spec_differences": "; ".join(specs.differences()) or "none",
        "report": report_markdown(found),
        "challenger_run": scoring.challenger.run_url,
        **found.summary(),
    }
    if scoring.champion is not None:
        meta["champion_run"] = scoring.champion.run_url
    return meta
