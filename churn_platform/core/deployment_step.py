"""What the deployment assets say: failure text, metadata and the staging hand-off read back.

The release policy itself is ``core.release``; these functions turn its results into the
plain values the Dagster assets (``defs/deployment.py``) show, so the assets only wrap links
and markdown. Nothing here imports Dagster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from churn_platform.core import release
from churn_platform.core.records import DEPLOY, NO_ACTION, REFUSED, StagingResult

RELEASE_MODE, ROLLBACK_MODE = "release", "rollback"
KEPT_CHAMPION = "nothing deployed: the gate kept the champion"


def lines(items: tuple[str, ...]) -> str:
    """Repairs or notes as one metadata line ('nothing' when there are none)."""
    return "; ".join(items) or "nothing"


def or_na(value: float | None) -> Any:
    """A number, or 'n/a' when there is none."""
    return value if value is not None else "n/a"


def mode_problem(mode: str) -> str | None:
    """Why ``mode`` is not a production_deployment mode (None: it is one)."""
    if mode in (RELEASE_MODE, ROLLBACK_MODE):
        return None
    return (
        f"production_deployment config mode must be {RELEASE_MODE!r} or "
        f"{ROLLBACK_MODE!r}, got {mode!r}"
    )


def staging_failure(staged: release.Staging) -> str:
    """The failure of a staging whose integration checks did not all pass."""
    return (
        f"staging checks failed for version {staged.served.version}: "
        f"{', '.join(staged.failed)}; the challenger was removed from staging and "
        "production is untouched"
    )


def staging_metadata(staged: release.Staging) -> dict[str, Any]:
    """A staged candidate's metadata as plain values (``candidate_url`` is a link,
    ``staging_endpoint`` the endpoint or None)."""
    return {
        "action": "deployed to staging",
        "candidate_version": staged.served.version,
        "candidate_model_uri": staged.served.model_uri,
        "baseline_version": staged.champion or "none",
        "candidate_url": staged.served.url,
        "staging_endpoint": staged.state.endpoint,
        "weights": str(staged.state.weights()),
        "repaired": lines(staged.repairs),
        "notes": lines(staged.notes),
    }


def staged_from_metadata(
    meta: Mapping[str, str | None], model_uri: Callable[[str], str]
) -> StagingResult:
    """The staging hand-off read back from a ``staging_deployment`` materialisation's metadata
    (values as text; ``model_uri`` gives a version's URI when the metadata lacks it)."""
    version = meta.get("candidate_version")
    if version is None:
        return StagingResult(NO_ACTION, reason=meta.get("reason") or "")
    uri, baseline = meta.get("candidate_model_uri"), meta.get("baseline_version")
    return StagingResult(
        DEPLOY,
        candidate=version,
        model_uri=uri if uri is not None else model_uri(version),
        baseline=baseline if baseline and baseline != "none" else None,
    )


def canary_metadata(done: release.Release) -> dict[str, Any]:
    """The canary check's evidence (``transitions`` is markdown when there was a canary)."""
    if done.canary is None:
        outcome = REFUSED if done.record.action == REFUSED else "nothing to release"
        return {"outcome": outcome, "reason": done.record.reason, **schema_metadata(done)}
    return {
        "outcome": str(done.canary.status),
        "reason": done.canary.reason,
        "rollback_seconds": or_na(done.canary.rollback_seconds),
        "transitions": done.canary.as_markdown(),
        **schema_metadata(done),
    }


def canary_passed(done: release.Release) -> bool:
    """The canary check: passed when the canary promoted or there was nothing to release;
    failed after a rollback, an abort or a refused schema change."""
    if done.canary is None:
        return done.record.action != REFUSED
    return done.canary.promoted


def schema_metadata(done: release.Release) -> dict[str, Any]:
    """A schema change's fields and how the release handled it (empty when none)."""
    change = done.schema_change
    if change is None:
        return {}
    how = "refused" if done.record.action == REFUSED else "cut over: shadow, then 100% at once"
    return {
        "schema_change": f"{how}: {change.describe()}",
        "schema_change_fields": ", ".join(change.fields),
    }


def release_metadata(
    done: release.Release,
    live: dict[str, int] | None,
    champion: str | None,
    previous: str | None,
) -> dict[str, Any]:
    """The release as the UI shows it, as plain values: what happened, then what serves now
    (``live``: the running router's weights, None when it does not answer; the aliases as
    the registry has them now), with any disagreement. ``transitions`` is markdown and
    ``production_endpoint`` the endpoint or None."""
    out = done.record
    metadata: dict[str, Any] = {"action": out.action, "reason": out.reason}
    metadata |= schema_metadata(done)
    if out.action == REFUSED:
        metadata["outcome"] = REFUSED
    if done.canary is not None:
        metadata |= {
            "outcome": str(done.canary.status),
            "rollback_seconds": or_na(done.canary.rollback_seconds),
            "transitions": done.canary.as_markdown(),
        }
    if live is None:
        live = done.state.weights() if done.state.endpoint else None
    metadata |= {
        "candidate_version": out.candidate or "none",
        "champion_version": champion or "none",
        "previous_version": previous or "none",
        "production_endpoint": done.state.endpoint,
        "weights": str(live) if live is not None else "no router answers",
        "repaired": lines(done.repairs),
        "notes": lines(done.notes),
    }
    if champion:
        problem = release.traffic_disagreement(champion, live)
        if problem:
            metadata["disagreement"] = problem
    return metadata
