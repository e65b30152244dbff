"""The router's backend table and its weighted choice (nginx's smooth weighted round-robin),
checked, parsed from ``PUT /-/weights`` bodies and saved to the state file."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Backend:
    """One model version the router can send traffic to."""

    version: str
    url: str
    weight: int


class SmoothWeightedRoundRobin:
    """nginx's smooth weighted round-robin over an immutable backend table.

    Each pick adds every backend's weight to its running score, chooses the highest
    score and subtracts the total from it. Over ``sum(weights)`` picks each backend
    is chosen exactly ``weight`` times, interleaved rather than in bursts.
    """

    def __init__(self, backends: Mapping[str, Backend]) -> None:
        self.backends = dict(backends)
        self._live = [b for b in self.backends.values() if b.weight > 0]
        self._total = sum(b.weight for b in self._live)
        self._current = {b.version: 0 for b in self._live}

    def pick(self) -> Backend | None:
        """The next backend, or None when no backend carries traffic."""
        if not self._live:
            return None
        best = None
        best_score = 0
        current = self._current
        for b in self._live:
            score = current[b.version] + b.weight
            current[b.version] = score
            if best is None or score > best_score:
                best, best_score = b, score
        assert best is not None
        current[best.version] -= self._total
        return best


def validate_table(backends: Mapping[str, Backend]) -> None:
    """Raise ``ValueError`` (saying what to send) unless the table is a valid split."""
    for b in backends.values():
        if isinstance(b.weight, bool) or not isinstance(b.weight, int) or not 0 <= b.weight <= 100:
            raise ValueError(
                f"weight of version {b.version!r} must be a whole percent in 0..100, got {b.weight!r}"
            )
        if not b.url.startswith(("http://", "https://")):
            raise ValueError(
                f"url of version {b.version!r} must be an http(s) base URL, got {b.url!r}"
            )
    total = sum(b.weight for b in backends.values())
    if total not in (0, 100):
        split = {v: b.weight for v, b in backends.items()}
        raise ValueError(f"weights must sum to 100 (or all be 0), got {total} from {split}")


def parse_table(payload: Any, current: Mapping[str, Backend]) -> dict[str, Backend]:
    """A new backend table from a PUT body; see the module docstring for the shapes."""
    if not isinstance(payload, dict) or not ({"backends", "weights"} & set(payload)):
        raise ValueError(
            'send {"backends": {"<version>": {"url": "http://...", "weight": 50}}} '
            'or {"weights": {"<version>": 50}}'
        )
    if "weights" in payload:
        weights = payload["weights"]
        if not isinstance(weights, dict):
            raise ValueError('"weights" must map version to percent, e.g. {"1": 95, "2": 5}')
        unknown = sorted(set(weights) - set(current))
        if unknown:
            raise ValueError(
                f"unknown version(s) {unknown}; known: {sorted(current)}. "
                'Add new versions with {"backends": {...}} and their url'
            )
        table = {v: Backend(v, b.url, weights.get(v, 0)) for v, b in current.items()}
    else:
        spec = payload["backends"]
        if not isinstance(spec, dict):
            raise ValueError('"backends" must map version to {"url": ..., "weight": ...}')
        table = {}
        for version, entry in spec.items():
            if not isinstance(entry, dict) or "weight" not in entry:
                raise ValueError(f'backend {version!r} needs {{"weight": percent}} (and "url")')
            url = entry.get("url") or (current[version].url if version in current else None)
            if not url:
                raise ValueError(f"backend {version!r} is new; give its url")
            table[str(version)] = Backend(str(version), str(url).rstrip("/"), entry["weight"])
    validate_table(table)
    return table


def table_json(backends: Mapping[str, Backend]) -> dict[str, Any]:
    """The JSON shape of a backend table (what GET /-/weights returns and the file holds)."""
    return {"backends": {v: {"url": b.url, "weight": b.weight} for v, b in backends.items()}}


def load_table(state_file: Path) -> dict[str, Backend]:
    """The table saved in ``state_file`` (empty when the file does not exist)."""
    if not state_file.exists():
        return {}
    try:
        return parse_table(json.loads(state_file.read_text()), {})
    except ValueError as exc:
        raise ValueError(
            f"router state file {state_file} is invalid ({exc}); fix or delete it"
        ) from None


def save_table(state_file: Path, backends: Mapping[str, Backend]) -> None:
    """Write the table atomically (a reader never sees half a file)."""
    state_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_file.with_suffix(state_file.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table_json(backends), indent=2))
    os.replace(tmp, state_file)
