"""The layering rules of README "Code layout", read from the source with ``ast``.

Every import counts, including the ones inside functions and under ``TYPE_CHECKING``:
a lazy import still couples the layers, it only hides the coupling.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "churn_platform"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import statement in ``path``.

    ``from a.b import c`` yields ``a.b.c`` as well as ``a.b``: ``c`` may be a module.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else None
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = (package or _module_name(path)).split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def _violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    """``file:line imports module`` for every import of ``forbidden`` (or below it)."""
    found = []
    for path in _modules(folder):
        for line, name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    return sorted(set(found))


def test_the_rules_see_the_modules_they_judge() -> None:
    """Guards the guards: an empty or mistyped folder would make every rule pass."""
    for folder in ("core", "defs", "targets", "resources"):
        assert len(_modules(folder)) >= 2, folder
    assert "dagster" in {m for _, m in _imports(PACKAGE / "resources" / "bases.py")}


def test_core_imports_neither_dagster_mlflow_nor_kubernetes() -> None:
    forbidden = ("dagster", "dagster_k8s", "dagster_postgres", "dagster_webserver")
    assert _violations("core", (*forbidden, "mlflow", "kubernetes")) == []


def test_targets_import_no_dagster() -> None:
    """``python -m churn_platform.serving status|stop`` and the tests use them without Dagster."""
    assert _violations("targets", ("dagster", "dagster_k8s", "churn_platform.defs")) == []


def test_defs_import_neither_serving_nor_mlflow() -> None:
    """Asset code goes through resources for everything outside (servers, MLflow, files)."""
    assert _violations("defs", ("churn_platform.serving", "mlflow")) == []


def test_the_platform_never_imports_the_test_harness() -> None:
    """``churn_platform.testing`` is for the tests and the benchmarks only."""
    found = [
        v
        for folder in ("core", "defs", "resources", "serving", "targets")
        for v in _violations(folder, ("churn_platform.testing", "churn_platform_tests"))
    ]
    assert found == []


def test_tests_and_benchmarks_do_not_import_each_other() -> None:
    found = []
    for path in sorted((REPO / "benchmarks").glob("*.py")):
        found += [
            f"{path.name}:{line} imports {name}"
            for line, name in _imports(path)
            if name.split(".")[0] == "churn_platform_tests"
        ]
    for path in sorted((REPO / "churn_platform_tests").glob("*.py")):
        if path.name == Path(__file__).name:
            continue
        text = path.read_text()
        found += [
            f"{path.name}:{line} imports {name}"
            for line, name in _imports(path)
            if name.split(".")[0] in ("benchmarks", "_common")
        ]
        if '"benchmarks"' in text or "benchmarks/" in text:
            found.append(f"{path.name} refers to a file under benchmarks/")
    assert found == []


def test_no_import_cycle_between_core_modules() -> None:
    modules = {_module_name(p): p for p in _modules("core")}
    graph = {
        name: sorted({m for _, m in _imports(path) if m in modules and m != name})
        for name, path in modules.items()
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == [], " ; ".join(" -> ".join(c) for c in cycles)
