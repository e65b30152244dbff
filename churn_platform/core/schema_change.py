"""Schema changes between two served versions: the request fields a candidate requires that
the champion's clients do not send.

"Requires" is what the model server enforces (``serving/model_server/schema.py``,
``InputSchema.check`` and ``check_value``), read from the two versions' logged specs:

* every feature the spec declares must be present in each record (a missing one is a 422),
  so a feature the candidate declares and the champion does not is a field the champion's
  clients do not send;
* a value must be of the feature's kind: a client sending what the champion takes is
  refused by a candidate whose feature changed kind (any number -> whole numbers, a
  string -> a number, ...); whole numbers -> any number is the one widening that is safe;
* a client sending raw records (the source's column names and values, applied by the
  model's own spec mapping) sends the champion's ``source`` column and ``values`` labels:
  a candidate reading another source column, or no longer mapping a label the champion
  maps, does not understand it.

* the spec's ``serving:`` rules (``core/serving_rules.py``) decide the rest: a feature the
  candidate drops is a field the champion's clients still send, refused only when the
  candidate's spec sets ``unknown_fields: refuse``; a category the champion allows and the
  candidate does not is refused only with ``unseen_categories: refuse`` (by default both are
  scored or ignored, and counted).

A null value is always taken (the pipeline imputes it) whatever ``nullable`` says:
``nullable: false`` and ``max_null_rate`` rule the training data (the data contract), not
requests, so a feature that turned non-nullable requires nothing new of a client.
"""

from __future__ import annotations

from dataclasses import dataclass

from churn_platform.core.spec import Feature, Spec

# the JSON a client sends per feature kind (serving/model_server/schema.py's kinds)
_REQUEST_KIND = {
    "numeric": "number",
    "integer": "whole number",
    "cyclical": "whole number",
    "categorical": "string",
    "boolean": "boolean",
    "date": "ISO date string",
}
# (what the champion takes, what the candidate takes) pairs where every value of the first
# is a value of the second
_WIDENINGS = {("whole number", "number")}


@dataclass(frozen=True)
class FieldBreak:
    """One request field the champion's clients cannot satisfy for the candidate."""

    field: str  # the candidate's feature (its request field)
    problem: str  # why, in words

    def describe(self) -> str:
        """'support_tickets (not declared by the champion: its clients do not send it)'."""
        return f"{self.field} ({self.problem})"


@dataclass(frozen=True)
class SchemaChange:
    """The candidate's request schema against the champion's (``breaks`` empty: compatible)."""

    champion: str
    candidate: str
    breaks: tuple[FieldBreak, ...]

    @property
    def fields(self) -> list[str]:
        """The request fields that break, in the candidate's spec order."""
        return [b.field for b in self.breaks]

    def describe(self) -> str:
        """One sentence naming every breaking field and why."""
        return (
            f"candidate v{self.candidate} requires request field(s) the clients of champion "
            f"v{self.champion} do not send: " + "; ".join(b.describe() for b in self.breaks)
        )


def field_breaks(champion: Spec, candidate: Spec) -> tuple[FieldBreak, ...]:
    """Each feature of ``candidate`` that a client shaped for ``champion`` cannot satisfy
    (module docstring); empty when every such client is served by both."""
    if champion.hash == candidate.hash:
        return ()
    breaks = []
    for name, feature in candidate.features.items():
        old = champion.features.get(name)
        problem = (
            _not_declared(name, champion)
            if old is None
            else _changed(old, feature, candidate.serving.refuses_unseen)
        )
        if problem:
            breaks.append(FieldBreak(name, problem))
    if candidate.serving.refuses_unknown:
        breaks += [
            FieldBreak(
                name,
                "dropped by the candidate, whose spec refuses undeclared fields "
                "(serving.unknown_fields: refuse): the champion's clients still send it",
            )
            for name in champion.features
            if name not in candidate.features
        ]
    return tuple(breaks)


def schema_change(
    champion: str, champion_spec: Spec, candidate: str, candidate_spec: Spec
) -> SchemaChange | None:
    """The breaking change from ``champion`` to ``candidate``, or None when the candidate
    serves every client of the champion."""
    breaks = field_breaks(champion_spec, candidate_spec)
    return SchemaChange(champion, candidate, breaks) if breaks else None


def _not_declared(name: str, champion: Spec) -> str:
    role = ""
    if name == champion.id_column:
        role = "; the champion's entity id, optional and never a model input"
    elif name == champion.target_column:
        role = "; the champion's target, never sent"
    return f"not declared by the champion: its clients do not send it{role}"


def _changed(old: Feature, new: Feature, refuses_unseen: bool) -> str:
    """Why clients of ``old`` break on ``new`` ('' when they do not)."""
    sent, taken = _REQUEST_KIND[old.kind], _REQUEST_KIND[new.kind]
    if sent != taken and (sent, taken) not in _WIDENINGS:
        return f"was {old.kind} (clients send a {sent}), now {new.kind} (takes a {taken})"
    dropped = [v for v in old.allowed or () if v not in (new.allowed or ())]
    if dropped and new.kind == "categorical" and refuses_unseen:
        return (
            f"value(s) {dropped} allowed by the champion are refused by the candidate "
            "(serving.unseen_categories: refuse)"
        )
    if (old.source or None) != (new.source or None):
        return (
            f"raw records: clients send source column {old.source or '(the feature name)'!r}, "
            f"the candidate reads {new.source or '(the feature name)'!r}"
        )
    unmapped = sorted(str(v) for v in old.values if v not in new.values)
    if unmapped:
        return f"raw records: source value(s) {unmapped} are mapped by the champion, not by the candidate"
    return ""
