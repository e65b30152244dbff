"""The evaluation report: champion vs challenger on the same holdout, as markdown with plots."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from churn_platform.core import gate, metrics, slices
from churn_platform.core.mapping import _map_values, convert_column
from churn_platform.core.quality_report import markdown_table
from churn_platform.core.records import ChallengerModel, EvaluationDecision
from churn_platform.core.spec import Spec, describe_difference


@dataclass(frozen=True)
class ScoredModel:
    """One model's scores on the holdout and where it came from."""

    label: str  # "challenger v7"
    version: str
    scores: np.ndarray
    run_url: str


@dataclass(frozen=True)
class ModelInputs:
    """The holdout rows as one model needs them: with every column of its own spec."""

    frame: pd.DataFrame | None  # None: the model's columns cannot be produced (``problem``)
    problem: str | None = None
    derived: tuple[str, ...] = ()  # columns mapped from the source rows through the model's spec


def inputs_for_spec(
    holdout: pd.DataFrame,
    holdout_spec: Spec,
    model_spec: Spec,
    columns: Sequence[str],
    source_rows: Callable[[], pd.DataFrame] | None = None,
) -> ModelInputs:
    """The holdout with the model's input ``columns``, for a model trained on ``model_spec``.

    The holdout was validated with ``holdout_spec`` (the current spec). When the model
    needs columns that spec dropped, they are mapped from the snapshot's source rows
    (``source_rows()``, the raw table) through ``model_spec``: renamed from their source
    column, values translated, converted to the spec's dtype, and joined to the holdout
    by entity id. The source rows are accepted only when every holdout id is found once
    and the columns both specs define alike hold the holdout's values on those rows (else
    the source changed since the snapshot). When the columns cannot be produced, ``frame``
    is None and ``problem`` says why; nothing raises.
    """
    missing = [c for c in columns if c not in holdout.columns]
    if not missing:
        return ModelInputs(holdout)
    why = f"the holdout lacks column(s) {missing} of the model's spec"
    if source_rows is None:
        return ModelInputs(None, f"{why} and no source rows were given to map them from")
    try:
        raw = source_rows()
    except Exception as exc:  # the gate must keep the champion, not crash, on a bad source
        return ModelInputs(None, f"{why}; re-reading the snapshot's source failed: {exc}")
    id_source = model_spec.source_of(model_spec.id_column)
    if id_source not in raw.columns:
        return ModelInputs(None, f"{why}; the source rows have no id column {id_source!r}")
    # columns to map: the missing ones, plus the ones both specs define alike (the check)
    shared = [
        c
        for c in holdout.columns
        if c in model_spec.features
        and c in holdout_spec.features
        and model_spec.features[c] == holdout_spec.features[c]
        and model_spec.source_of(c) in raw.columns
    ]
    unsourced = [c for c in missing if model_spec.source_of(c) not in raw.columns]
    if unsourced:
        sources = [model_spec.source_of(c) for c in unsourced]
        return ModelInputs(
            None, f"{why}; the source rows have no column(s) {sources} to map them from"
        )
    ids = raw[id_source].astype("string")
    if ids.duplicated().any():
        return ModelInputs(None, f"{why}; the source rows repeat ids of {id_source!r}")
    by_id = pd.Index(ids.to_numpy(), dtype=object)
    converted: dict[str, pd.Series] = {}
    for col in (*missing, *shared):
        series = raw[model_spec.source_of(col)].reset_index(drop=True)
        values = model_spec.features[col].values
        if values:
            series = _map_values(series, values)[0]
        converted[col] = convert_column(series, model_spec.dtypes[col])[0].set_axis(by_id)
    mapped = pd.DataFrame(converted, index=by_id)
    wanted = pd.Index(holdout[holdout_spec.id_column].astype("string").to_numpy(), dtype=object)
    found = wanted.isin(mapped.index)
    if not found.all():
        return ModelInputs(
            None,
            f"{why}; {int((~found).sum())} of {len(wanted)} holdout ids are not in the source "
            "rows (the source changed since the snapshot)",
        )
    aligned = mapped.loc[wanted].reset_index(drop=True)
    for col in shared:
        ours, theirs = holdout[col].reset_index(drop=True), aligned[col]
        same = (ours == theirs).fillna(False) | (ours.isna() & theirs.isna())
        if not bool(same.all()):
            return ModelInputs(
                None,
                f"{why}; the source rows differ from the holdout on {col!r} "
                f"({int((~same).sum())} rows): the source changed since the snapshot",
            )
    frame = holdout.reset_index(drop=True).copy()
    for col in missing:
        frame[col] = aligned[col]
    return ModelInputs(frame, None, tuple(missing))


@dataclass(frozen=True)
class SpecComparison:
    """The specs of the two models the gate compares, for the report."""

    challenger: Spec
    champion: Spec | None = None
    derived: tuple[str, ...] = ()  # champion columns mapped from the source rows
    champion_problem: str | None = None  # why the champion could not be scored
    notes: list[str] = field(default_factory=list)

    def differences(self) -> list[str]:
        """How the challenger's spec differs from the champion's ([] when equal)."""
        if self.champion is None:
            return []
        return describe_difference(self.champion, self.challenger)

    def markdown(self) -> list[str]:
        """The report's "Specs" section."""
        lines = ["", "## Specs", ""]
        if self.champion is None:
            lines.append(f"Challenger spec `{self.challenger.short_hash}`.")
            return lines
        diff = self.differences()
        hashes = (
            f"challenger spec `{self.challenger.short_hash}`, "
            f"champion spec `{self.champion.short_hash}`"
        )
        if not diff:
            lines.append(f"Both models use the same spec ({hashes}).")
        else:
            lines.append(
                f"**The specs differ** ({hashes}); each model is scored with the columns of "
                "its own spec on the same holdout rows. Challenger vs champion:"
            )
            lines += ["", *(f"- {d}" for d in diff)]
        if self.derived:
            lines += [
                "",
                f"Champion column(s) {', '.join(self.derived)} are not in the current spec: "
                "mapped from the snapshot's source rows through the champion's spec.",
            ]
        if self.champion_problem:
            lines += ["", f"**The champion could not be scored:** {self.champion_problem}."]
        return lines


def roc_points(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold (for plotting)."""
    order = np.argsort(-scores, kind="mergesort")
    y_sorted = y[order].astype(float)
    distinct = np.r_[np.flatnonzero(np.diff(scores[order])), len(y) - 1]
    tps = np.cumsum(y_sorted)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(tps[-1], 1.0)]
    fpr = np.r_[0.0, fps / max(fps[-1], 1.0)]
    return fpr, tpr


def calibration_points(y: np.ndarray, scores: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Mean predicted vs observed churn rate per score decile (equal-count bins)."""
    edges = np.unique(np.quantile(scores, np.linspace(0, 1, bins + 1)))
    idx = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, len(edges) - 2)
    frame = pd.DataFrame({"bin": idx, "predicted": scores, "observed": y})
    return frame.groupby("bin").agg(
        predicted=("predicted", "mean"), observed=("observed", "mean"), rows=("observed", "size")
    )


def plots_png(y: np.ndarray, models: list[ScoredModel]) -> dict[str, bytes]:
    """ROC curves and a calibration plot of every model, as PNG bytes keyed by file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    fig, ax = plt.subplots(figsize=(4.5, 4.2), dpi=90)
    for m in models:
        fpr, tpr = roc_points(y, m.scores)
        ax.plot(fpr, tpr, label=m.label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on the holdout")
    ax.legend(loc="lower right")
    out["roc.png"] = _png(fig)
    fig, ax = plt.subplots(figsize=(4.5, 4.2), dpi=90)
    for m in models:
        cal = calibration_points(y, m.scores)
        ax.plot(cal["predicted"], cal["observed"], marker="o", label=m.label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlabel="mean predicted churn", ylabel="observed churn rate", title="Calibration (deciles)"
    )
    ax.legend(loc="upper left")
    out["calibration.png"] = _png(fig)
    plt.close("all")
    return out


def _png(fig: object) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(buffer, format="png")  # type: ignore[attr-defined]
    return buffer.getvalue()


def embed_png(png: bytes, alt: str) -> str:
    """Markdown image with the PNG inline (the Dagster UI renders data URIs)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


@dataclass(frozen=True)
class Evaluation:
    """The gate's decision on one challenger and the report that explains it."""

    record: EvaluationDecision  # the hand-off to staging
    decision: gate.Decision
    comparison: metrics.PairedComparison | None  # None when there was no champion
    slice_table: pd.DataFrame
    markdown: str
    plots: dict[str, bytes]  # file name -> PNG

    def summary(self) -> dict[str, float]:
        """The comparison's headline numbers (empty without a champion)."""
        c = self.comparison
        if c is None:
            return {}
        return {
            "auc_delta": round(c.delta, 5),
            "auc_delta_ci_lower": round(c.delta_lower, 5),
            "auc_delta_ci_upper": round(c.delta_upper, 5),
            "delong_p_value": round(c.delong_p_value, 6),
        }


def evaluate(
    y: np.ndarray,
    model: ChallengerModel,
    challenger: ScoredModel,
    champion: ScoredModel | None,
    masks: Mapping[str, np.ndarray],
    cfg: gate.GateConfig,
    specs: SpecComparison | None = None,
    unscored_champion: str | None = None,
) -> Evaluation:
    """Compare the challenger (``model``, scored as ``challenger``) with the champion on the
    same rows, decide, and write the report.

    The AUC difference gets a paired-bootstrap interval and DeLong's test (``gate.compare``);
    each slice gets both models' AUC and the delta with its paired interval;
    ``gate.decide`` reads those numbers. The challenger's own AUC interval is the one its
    check computed at training (``model.metrics``), not a second bootstrap.
    ``unscored_champion`` is the version of a champion that could not be scored
    (``specs.champion_problem`` says why): the champion is kept. ``specs`` adds the
    "Specs" section (hashes, and how the two specs differ).
    """
    scored = [challenger] if champion is None else [challenger, champion]
    deltas = (
        []
        if champion is None
        else slices.paired_slice_deltas(y, challenger.scores, champion.scores, masks, cfg.bootstrap)
    )
    table = slice_table(y, scored, masks, deltas)
    intervals = model_intervals(y, model, scored, cfg)
    comparison = None
    if unscored_champion is not None and champion is None:
        problem = (specs.champion_problem if specs else None) or "no scores"
        decision = gate.keep_unscored_champion(unscored_champion, problem, model.checks_passed, cfg)
        record = EvaluationDecision(
            promote=False,
            reason=decision.reason,
            challenger_version=model.version,
            challenger_model_uri=model.model_uri,
            champion_version=unscored_champion,
            holdout_hash=model.holdout_hash,
            rule=cfg.mode,
        )
        text = render(y, decision, None, intervals, table, model.holdout_hash, cfg, specs)
        return Evaluation(record, decision, None, table, text, plots_png(y, scored))
    if champion is not None:
        comparison = gate.compare(y, challenger.scores, champion.scores, cfg)
    decision = gate.decide(comparison, model.checks_passed, deltas, cfg)
    record = EvaluationDecision(
        promote=decision.promote,
        reason=decision.reason,
        challenger_version=model.version,
        challenger_model_uri=model.model_uri,
        champion_version=None if champion is None else champion.version,
        holdout_hash=model.holdout_hash,
        rule=cfg.mode,
    )
    text = render(y, decision, comparison, intervals, table, model.holdout_hash, cfg, specs)
    return Evaluation(record, decision, comparison, table, text, plots_png(y, scored))


@dataclass(frozen=True)
class ModelInterval:
    """A model's holdout AUC interval as the report shows it, and where it came from."""

    model: ScoredModel
    interval: metrics.AucInterval


def logged_interval(
    model: ChallengerModel, y: np.ndarray, scores: np.ndarray
) -> metrics.AucInterval | None:
    """The challenger's holdout AUC interval as its check computed it at training (logged
    with the model), when that was on these rows: its AUC equals these scores' AUC.

    None when the model carries no interval (logged before it did) or another holdout's.
    """
    m = model.metrics
    keys = ("holdout_auc", "holdout_auc_ci_lower", "holdout_auc_ci_upper", "holdout_auc_ci_level")
    if not all(k in m for k in keys) or abs(m["holdout_auc"] - metrics.auc(y, scores)) > 1e-9:
        return None
    return metrics.AucInterval(
        point=m["holdout_auc"],
        lower=m["holdout_auc_ci_lower"],
        upper=m["holdout_auc_ci_upper"],
        n_resamples=0,  # not logged; the model's check_n_resamples parameter says
        level=m["holdout_auc_ci_level"],
        method="the model check's bootstrap, logged at training",
    )


def model_intervals(
    y: np.ndarray, model: ChallengerModel, scored: Sequence[ScoredModel], cfg: gate.GateConfig
) -> list[ModelInterval]:
    """Each scored model's AUC interval: the challenger's from its training check (one
    bootstrap per model), else drawn here with the gate's resamples and seed."""
    out = []
    for i, m in enumerate(scored):
        ci = logged_interval(model, y, m.scores) if i == 0 else None
        if ci is None:
            ci = metrics.bootstrap_auc_ci(
                y, m.scores, n_resamples=cfg.n_resamples, level=cfg.level, seed=cfg.seed
            )
        out.append(ModelInterval(m, ci))
    return out


def slice_table(
    y: np.ndarray,
    scored: list[ScoredModel],
    masks: Mapping[str, np.ndarray],
    deltas: Sequence[slices.SliceDelta] = (),
) -> pd.DataFrame:
    """AUC per slice for each model, and the challenger-minus-champion delta with the
    upper bound of its paired interval (the number the gate's slice rule reads)."""
    results = [slices.slice_aucs((y, m.scores), masks) for m in scored]
    table = pd.DataFrame(
        {
            "slice": [r.name for r in results[0]],
            "rows": [r.n for r in results[0]],
            "churners": [r.n_pos for r in results[0]],
            "challenger_auc": [r.auc for r in results[0]],
        }
    )
    if len(results) == 2:
        by_name = {d.name: d for d in deltas}
        table["champion_auc"] = [r.auc for r in results[1]]
        table["delta"] = [getattr(by_name.get(r.name), "delta", None) for r in results[0]]
        table["delta_upper"] = [getattr(by_name.get(r.name), "upper", None) for r in results[0]]
    else:
        table["delta"] = None
    table["note"] = [r.skipped_reason or "" for r in results[0]]
    return table


def _ci_header(intervals: Sequence[ModelInterval]) -> str:
    """The models table's interval column: its level when every row shares it."""
    levels = {found.interval.level for found in intervals}
    return f"{levels.pop():.0%} CI" if len(levels) == 1 else "CI (level per row)"


def render(
    y: np.ndarray,
    decision: gate.Decision,
    comparison: metrics.PairedComparison | None,
    intervals: Sequence[ModelInterval],
    slice_table: pd.DataFrame,
    holdout_hash: str,
    cfg: gate.GateConfig,
    specs: SpecComparison | None = None,
) -> str:
    """The report's markdown (plots are appended separately)."""
    verdict = "PROMOTE the challenger" if decision.promote else "KEEP the champion"
    lines = [
        f"# Evaluation report: {verdict}",
        "",
        f"**Decision:** {verdict}. {decision.reason}",
        "",
        f"Rule: `{cfg.mode}` (min_delta {cfg.min_delta}, slice tolerance {cfg.slice_tolerance}, "
        f"{cfg.bound.replace('_', '-')} {cfg.level:.0%} bounds, {cfg.n_resamples} resamples).",
        decision.power_text(),
        f"Holdout: {len(y)} rows, {int(y.sum())} churners, hash `{holdout_hash[:16]}`; "
        "both models scored in this run on the same rows.",
        "",
        "## Models",
        "",
        f"| model | AUC | {_ci_header(intervals)} | MLflow run |",
        "|---|---|---|---|",
    ]
    one_level = len({found.interval.level for found in intervals}) == 1
    for found in intervals:
        m, ci = found.model, found.interval
        level = "" if one_level else f" ({ci.level:.0%})"
        lines.append(
            f"| {m.label} | {ci.point:.4f} | {ci.lower:.4f} - {ci.upper:.4f}{level} "
            f"| [run]({m.run_url}) |"
        )
    if comparison is not None:
        lines += [
            "",
            "## Paired comparison (challenger - champion)",
            "",
            f"- AUC delta **{comparison.delta:+.4f}**, {comparison.level:.0%} paired-bootstrap "
            f"interval **[{comparison.delta_lower:+.4f}, {comparison.delta_upper:+.4f}]** "
            f"(each end a {'one-sided' if cfg.bound == 'one_sided' else 'two-sided'} "
            f"{cfg.level:.0%} bound: the gate promotes only when the lower one is above 0)",
            f"- DeLong: z = {comparison.delong_z:.3f}, two-sided p = {comparison.delong_p_value:.4g}",
        ]
    elif specs is None or specs.champion_problem is None:
        lines += ["", "No champion is registered yet: there is nothing to compare against."]
    if specs is not None:
        lines += specs.markdown()
    lines += ["", "## Slices", "", markdown_table(slice_table.round(4))]
    return "\n".join(lines)
