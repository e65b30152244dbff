"""The starter spec's text: an inferred spec written as YAML with a comment on every value.

``render_spec`` says where each inferred value came from ("observed 0..118, margin 10%",
"12 distinct values", "3.1% blank") and adds commented examples of slices and invariances;
``infer_spec_text`` infers, renders and loads the text with ``core.spec.parse_spec``, so what
``spec infer`` writes always loads.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import yaml

from churn_platform.core.spec import Spec, parse_spec
from churn_platform.core.spec_infer import InferOptions, Inferred, InferredSpec, infer_spec


def _y(value: Any) -> str:
    """One YAML scalar or flow list (quoted where YAML would misread it: 'yes', '01')."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True)
    return text.strip().removesuffix("...").strip()


def _line(indent: int, key: str, value: Any, note: str = "") -> str:
    text = f"{' ' * indent}{_y(key)}: {_y(value)}"
    return f"{text}  # {note}" if note else text


def _entry_lines(col: Inferred, indent: int) -> list[str]:
    lines = []
    for key, value in col.entry.items():
        lines.append(_line(indent, key, value, col.notes.get(key, "")))
    for key, note in col.notes.items():
        if key not in col.entry:
            lines.append(f"{' ' * indent}# {note}")
    return lines


def render_spec(inferred: InferredSpec) -> str:
    """The commented YAML a person edits; loads with ``core.spec.parse_spec``."""
    first_categorical = next(
        (f for f in inferred.features if f.entry["kind"] == "categorical"), None
    )
    first_number = next(
        (f for f in inferred.features if f.entry["kind"] in ("numeric", "integer")), None
    )
    out = [
        *_columns_lines(inferred),
        *_threshold_lines(inferred),
        "",
        "# named slices of the holdout, each with its own AUC check; e.g.",
        *_example_slice_lines(first_categorical, first_number),
        "slices: []",
        "",
        "# behavioural checks: changing one feature must move churn in a stated direction; e.g.",
        *_example_invariance_lines(inferred.features),
        "invariances: []",
        "",
        "drift:",
        _line(2, "threshold", 0.2, "PSI above this on any watched feature is drift"),
        "",
        "holdout:",
        _line(2, "fraction", 0.2),
        _line(2, "salt", f"{inferred.name}-holdout-v1", "change it to draw a new holdout"),
        "",
    ]
    return "\n".join(out)


def _columns_lines(inferred: InferredSpec) -> list[str]:
    """The header, the id, the target and the features (with the columns left out)."""
    out = [
        f"# Starter spec written by `python -m churn_platform spec infer` from {inferred.origin or 'a table'}",
        f"# ({inferred.rows:,} rows). Every inferred value says where it came from; edit what is",
        "# wrong, add slices and invariances, then check it: python -m churn_platform spec check DATA",
        "version: 1",
        _line(0, "name", inferred.name),
        _line(
            0, "description", f"{inferred.name} table, spec inferred from {inferred.rows:,} rows"
        ),
        "",
        f"entity_id:  # {inferred.id_column.headline}",
        _line(2, "column", inferred.id_column.name),
        *_entry_lines(inferred.id_column, 2),
        "",
        "target:",
        _line(2, "column", inferred.target.name),
        *_entry_lines(inferred.target, 2),
        "",
        "features:",
    ]
    for col in inferred.features:
        if col.headline:
            out.append(f"  # {col.headline}")
        out.append(f"  {_y(col.name)}:")
        out += _entry_lines(col, 4)
    if inferred.left_out:
        out.append("  # left out (not features):")
        for col in inferred.left_out:
            out.append(f"  #   {col.source}: {col.left_out}")
    return out


def _threshold_lines(inferred: InferredSpec) -> list[str]:
    """The dataset and model thresholds, the row floor scaled to the rows observed."""
    return [
        "",
        "dataset:",
        _line(
            2,
            "min_rows",
            max(1, inferred.rows // 10),
            f"a tenth of the {inferred.rows:,} rows observed: a much smaller snapshot is refused",
        ),
        _line(2, "max_null_rate", 0.05, "for features without their own max_null_rate"),
        "",
        "model:",
        _line(2, "min_auc", 0.80, "the holdout AUC (lower end of its interval) must reach this"),
        _line(2, "min_slice_auc", 0.74),
        _line(
            2, "min_slice_rows", 30, "slices with fewer holdout rows are skipped, with the reason"
        ),
    ]


def _example_slice_lines(
    first_categorical: Inferred | None, first_number: Inferred | None
) -> list[str]:
    """Commented-out slices over the first categorical and the first numeric feature."""
    out = []
    if first_categorical is not None:
        out += [
            f"#  - name: {first_categorical.name}",
            f"#    column: {first_categorical.name}",
            "#    values: all            # one slice per allowed value",
        ]
    if first_number is not None:
        low, high = first_number.entry["range"]
        mid = int(round((low + high) / 2))  # a whole number, as YAML shows it
        out += [
            f"#  - name: {first_number.name}",
            f"#    column: {first_number.name}",
            f"#    bands: {{low: [{_y(low)}, {_y(mid)}], high: [{_y(mid)}, null]}}",
        ]
    return out


# columns like a protected attribute (compared on the lower-cased name): an invariance on one
# would write a bias into the model's checks, so none is ever proposed there
PROTECTED = (
    r"gender|sex|(^|_)age($|_)|(^|_)race($|_)|ethnic|religio|nationality|citizen|marital"
    r"|married|disab|pregnan|orientation|birth|(^|_)dob($|_)|senior|caste|veteran"
)
_CAMEL_AGE = r"(^|[a-z_])Age([A-Z_]|$)"  # CustomerAge, AgeBand (snake_case is lower-cased)
# plausibly causal features by name: (pattern, direction when the feature grows / turns true,
# why); the first feature that matches one (and no protected pattern) is the example
CAUSAL: tuple[tuple[str, str, str], ...] = (
    (r"complain|ticket|support_?call|incident|dispute", "increase", "more trouble, more churn"),
    (r"inactiv|days_?since", "increase", "a longer silence must raise churn"),
    (r"tenure|loyal", "decrease", "a longer relationship must lower churn"),
    (r"active|login|engag|usage", "decrease", "more use must lower churn"),
)


def protected_like(name: str) -> bool:
    """Whether a column's name looks like a protected attribute (gender, age, race, ...)."""
    return bool(re.search(PROTECTED, name.lower()) or re.search(_CAMEL_AGE, name))


def _causal_change(col: Inferred) -> tuple[str, str, str] | None:
    """(change lines, direction, why) when ``col`` is a plausible cause of churn by name."""
    if protected_like(col.name) or protected_like(col.source):
        return None
    kind = col.entry["kind"]
    for pattern, direction, why in CAUSAL:
        if not re.search(pattern, col.name.lower()):
            continue
        if kind == "boolean":
            return "#    from: false\n#    to: true", direction, why
        if kind in ("numeric", "integer"):
            low, high = col.entry["range"]
            span = (high - low) / 10  # a tenth of the range: a move the model should feel
            step = max(1, round(span)) if kind == "integer" else float(f"{span:.2g}")
            return f"#    step: {_y(step)}", direction, why
    return None


def _example_invariance_lines(features: list[Inferred]) -> list[str]:
    """A commented-out invariance on the first plausibly causal feature (by name), never on
    a protected-attribute-like column; none, said, when no feature is one."""
    for col in features:
        change = _causal_change(col)
        if change is None:
            continue
        lines, direction, why = change
        return [
            f"#  - name: {col.name}_invariance",
            f"#    feature: {col.name}",
            *lines.split("\n"),
            f"#    direction: {direction}   # {why}: check it holds for your customers",
            "#    min_fraction: 0.9",
        ]
    return [
        "#  (none proposed: no feature is a plausible cause of churn by its name. Pick one",
        "#  whose change should move churn, e.g. a longer contract must lower it; never a",
        "#  protected attribute such as gender or age)",
        "#  - {name: NAME, feature: FEATURE, from: VALUE, to: VALUE, direction: decrease}",
    ]


def infer_spec_text(
    frame: pd.DataFrame,
    *,
    target: str,
    id_column: str,
    name: str = "churn",
    origin: str = "",
    options: InferOptions | None = None,
) -> tuple[str, Spec]:
    """``render_spec(infer_spec(...))`` and the ``Spec`` it loads as (checked, never invalid)."""
    inferred = infer_spec(
        frame, target=target, id_column=id_column, name=name, origin=origin, options=options
    )
    text = render_spec(inferred)
    return text, parse_spec(text, where="<inferred spec>")
