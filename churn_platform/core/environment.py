"""The software a model was trained with against the software that serves it.

Every version the platform registers pins ``PINNED_PACKAGES`` at the versions of the
training environment (its ``requirements.txt``) and records the Python it was trained on
(its ``python_env.yaml``). A model server reports the same packages and its Python on
``/health`` (``environment_report``); the staging check ``environment_parity`` compares the
two (``parity_problems``) so a server built from other pins fails before any client sees it.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

#: What a saved pipeline needs to load and predict: pinned in every registered version.
PINNED_PACKAGES = ("scikit-learn", "pandas", "numpy", "scipy", "skops", "mlflow", "pyarrow")

_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)")


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them (``Scikit_Learn`` -> ``scikit-learn``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_versions(packages: Iterable[str] = PINNED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each package here (None when it is not installed)."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[normalise(name)] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[normalise(name)] = None
    return versions


def environment_report(packages: Iterable[str] = PINNED_PACKAGES) -> dict[str, Any]:
    """This process's Python and package versions, as a server reports them on ``/health``."""
    return {"python": platform.python_version(), "packages": installed_versions(packages)}


def parse_requirements(lines: Iterable[str]) -> dict[str, str]:
    """The ``name==version`` pins of a requirements file (normalised names); unpinned,
    ranged and option lines carry no version to compare and are left out."""
    pins = {}
    for line in lines:
        match = _PIN.match(line)
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


def parity_problems(
    required: Mapping[str, str], python_required: str | None, served: Mapping[str, Any]
) -> list[str]:
    """What differs between a model's pins (``required``, ``python_required``: the Python
    it was trained on) and a server's ``environment_report`` (``served``): one line per
    package, naming it and both versions. Python is compared on major.minor (a patch
    release does not change pickled or skops-saved objects)."""
    problems = []
    packages = {normalise(k): v for k, v in (served.get("packages") or {}).items()}
    for name, version in sorted(required.items()):
        have = packages.get(normalise(name), "not reported")
        if have != version:
            problems.append(f"{name}: model requires {version}, server has {have or 'none'}")
    python = served.get("python")
    if python_required and _minor(python_required) != _minor(str(python)):
        problems.append(f"python: model was trained on {python_required}, server runs {python}")
    return problems


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])
