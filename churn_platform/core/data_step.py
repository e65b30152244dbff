"""The data assets' decisions and texts: a snapshot's problems and metadata, the contract
run's report, failure text and metadata.

The Dagster assets (``defs/data.py``) read the source and the storage through their
resources and turn these results into check results, failures and output metadata.
Nothing here imports Dagster.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import pandas as pd

from churn_platform.core import contract, quality_report
from churn_platform.core.mapping import MappedFrame, describe_missing
from churn_platform.core.spec import Spec

WEEK_KEY = "synthetic_week"  # snapshot metadata: the synthetic week drawn
UNTOUCHED = "Nothing downstream runs; the last validated data is untouched."


class Table(Protocol):
    """What the snapshot checks read of a table: its columns and its length (a pandas frame,
    or the Spark engine's account of a written week)."""

    @property
    def columns(self) -> Any:
        """The column names."""
        ...

    def __len__(self) -> int: ...


class Timings(dict[str, float]):
    """Seconds per named stage of a step (``timings_s`` metadata)."""

    @contextmanager
    def measure(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name``."""
        started = time.perf_counter()
        yield
        self[name] = time.perf_counter() - started

    def rounded(self) -> dict[str, float]:
        """The timings to the millisecond."""
        return {k: round(v, 3) for k, v in self.items()}


def missing_columns(frame: pd.DataFrame, spec: Spec) -> list[str]:
    """The spec's columns the snapshot lacks after the column mapping."""
    return [c for c in spec.all_columns if c not in frame.columns]


def snapshot_checks(
    frame: Table, missing: Sequence[str], spec: Spec, location: object
) -> dict[str, tuple[bool, dict[str, Any]]]:
    """The snapshot's checks: name -> (passed, evidence)."""
    return {
        "row_count_positive": (
            len(frame) > 0,
            {"rows": len(frame), "bound": "> 0", "source": str(location)},
        ),
        "schema_columns_present": (
            not missing,
            {
                "missing_columns": ", ".join(missing) or "none",
                "columns_found": ", ".join(map(str, frame.columns)),
                "fix": describe_missing(spec, list(missing)) if missing else "",
            },
        ),
    }


def snapshot_problem(
    frame: Table, missing: Sequence[str], spec: Spec, location: object
) -> str | None:
    """Why the snapshot stops the run (no rows, or spec columns missing); None when usable."""
    if len(frame) and not missing:
        return None
    problem = (
        "the snapshot has no rows"
        if len(frame) == 0
        else f"column(s) {list(missing)} of the spec are missing "
        f"({describe_missing(spec, list(missing))})"
    )
    return f"{location}: {problem}. Columns found: {list(frame.columns)}. {UNTOUCHED}"


def snapshot_key(version: str, now: pd.Timestamp, run_id: str) -> str:
    """The storage key of a snapshot's Parquet file: unique per run, so two runs drawing the
    same data in the same second never write one file."""
    return f"snapshots/snapshot_{now:%Y%m%dT%H%M%S}_{version[:12]}_{run_id[:8]}.parquet"


def snapshot_metadata(mapped: MappedFrame, description: dict[str, Any]) -> dict[str, Any]:
    """A snapshot's source and mapping metadata as plain values: ``nulls_from_conversion``
    and ``unmapped_values`` are JSON, ``preview`` markdown; the synthetic week when drawn."""
    frame = mapped.frame
    conversion = {c: r.as_dict() for c, r in mapped.conversion_report.items() if r.nulls_added}
    dated = synthetic_metadata(description)
    return {
        "source": str(description.get("location")),
        "source_kind": str(description.get("kind")),
        "columns": ", ".join(map(str, frame.columns)),
        "nulls_from_conversion": conversion,
        "unmapped_values": mapped.unmapped_values,
        "preview": frame.head(5),
        **dated,
    }


def synthetic_metadata(description: dict[str, Any]) -> dict[str, Any]:
    """The synthetic week a source description says was drawn (empty for other sources)."""
    if "week" not in description:
        return {}
    return {WEEK_KEY: int(description["week"]), "synthetic_as_of": description["as_of"]}


def spec_changed(spec: Spec, defined: set[str], spec_path: str) -> str | None:
    """Why the run stops when ``spec``'s contract rules differ from the asset's checks
    (``defined``, fixed when the definitions loaded); None when they agree."""
    rules = set(contract.rule_names(spec))
    if defined == rules:
        return None
    return (
        f"the spec changed since the definitions loaded: CHURN_SPEC "
        f"({spec_path}, spec_hash {spec.short_hash}) has contract "
        f"rules {sorted(rules - defined)} that are not asset "
        f"checks here, and checks {sorted(defined - rules)} it "
        "lacks. Reload the code location (or restart `dagster dev`) and run again."
    )


def quality_text(
    snapshot: MappedFrame, results: Sequence[contract.RuleResult], spec: Spec, version: str
) -> str:
    """The snapshot's quality report (markdown): the rules' results, a column profile, the
    mapping summary and the spec."""
    summary = {
        **quality_report.profile_frame(snapshot.frame),
        "mapping": snapshot.summary(),
        "spec": {"name": spec.name, "spec_hash": spec.short_hash},
    }
    return quality_report.render_quality_report(list(results), summary, version)


def rule_metadata(result: contract.RuleResult) -> dict[str, Any]:
    """A contract rule's evidence as plain values (``failure_cases`` is markdown)."""
    meta: dict[str, Any] = {k: ("n/a" if v is None else v) for k, v in result.metadata().items()}
    meta["failure_cases"] = result.to_markdown()
    return meta


def blocking_failure(blocking: Sequence[contract.RuleResult]) -> str:
    """The failure of a snapshot that broke blocking contract rules."""
    return (
        f"{len(blocking)} blocking contract rule(s) failed: "
        + "; ".join(f"{r.name} ({r.message})" for r in blocking)
        + ". No model is trained on this snapshot; the last validated data is untouched."
    )


def validated_metadata(
    typed: pd.DataFrame | float,
    results: Sequence[contract.RuleResult],
    spec: Spec,
    report_text: str,
) -> dict[str, Any]:
    """The validated data's contract metadata (``quality_summary`` is markdown); ``typed``
    is the validated frame, or its churn rate (computed where the rows are)."""
    warned = [r.name for r in results if not r.passed]
    rate = typed if isinstance(typed, float) else float(typed[spec.target_column].mean())
    return {
        "rules_passed": f"{sum(r.passed for r in results)}/{len(results)}",
        "warnings": ", ".join(warned) or "none",
        "churn_rate": round(rate, 4),
        "quality_summary": report_text.split("## Columns")[0][:6000],
    }
