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


# tests that may name files under benchmarks/ (never import them), with the reason
READS_BENCHMARK_TEXT = {
    "test_benchmark_figures.py": "holds the Markdown tables to the result files; no benchmark "
    "code is imported or run",
}


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
        if path.name in READS_BENCHMARK_TEXT:
            continue
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


# --- configuration is read in one place; rooms stay small (issue: one platform, many models) ---

# Where the environment may be read: the configuration modules and the entry points.
ENV_READERS = {
    "churn_platform/settings.py": "the table of environment variables and their parsing",
    "churn_platform/config.py": "builds the frozen PlatformConfig from the environment",
    "churn_platform/cli.py": "entry point: `python -m churn_platform`",
    "churn_platform/spec_cli.py": "entry point: `python -m churn_platform spec`",
    "churn_platform/serving/__main__.py": "entry point of the model-server and router processes",
    "churn_platform/definitions.py": "entry point of the code location Dagster loads",
    "churn_platform/demo.py": "entry point: `python -m churn_platform demo` sets the variables "
    "of each week for the jobs it starts",
    "churn_platform/object_store.py": "reads the AWS variables boto/s3fs read themselves, to "
    "name them (never their values) in resources",
    "churn_platform/targets/local/process.py": "a child process gets the parent's environment "
    "plus overrides: subprocess needs the whole mapping, copied when the child starts",
    "churn_platform/resources/mlflow_registry.py": "restores MLFLOW_TRACKING_URI/REGISTRY_URI "
    "that mlflow.set_tracking_uri exports, so one store does not leak into child processes",
}
_ENV_READ = ("os.environ", "os.getenv", "getenv(")
# the functions of settings.py that read the environment (each takes environ=None: os.environ)
SETTINGS_READERS = {
    "get",
    "source",
    "describe",
    "environment",
    "home_path",
    "churn_home",
    "storage_url",
    "storage_is_remote",
    "default_mlflow_uri",
    "drift_settings",
    "performance_settings",
    "auto_release",
    "kubernetes_settings_from_env",
    "engine_config",
}


def _settings_reads(path: Path) -> Iterator[tuple[int, str]]:
    """(line, name) for every use of an environment-reading function of ``settings``:
    ``settings.get(...)`` (the module imported as ``settings``) or
    ``from churn_platform.settings import get``."""
    tree = ast.parse(path.read_text())
    module_imported = any(
        isinstance(node, ast.ImportFrom)
        and node.module == "churn_platform"
        and any(a.name == "settings" and a.asname in (None, "settings") for a in node.names)
        for node in ast.walk(tree)
    )
    for node in ast.walk(tree):
        if (
            module_imported
            and isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "settings"
            and node.attr in SETTINGS_READERS
        ):
            yield node.lineno, f"settings.{node.attr}"
        if isinstance(node, ast.ImportFrom) and node.module == "churn_platform.settings":
            for alias in node.names:
                if alias.name in SETTINGS_READERS:
                    yield node.lineno, f"settings.{alias.name}"


def test_only_the_configuration_modules_and_entry_points_read_the_environment() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(REPO))
        if rel in ENV_READERS:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if any(token in code for token in _ENV_READ):
                found.append(f"{rel}:{number}: {line.strip()}")
        found += [f"{rel}:{number}: {name}" for number, name in _settings_reads(path)]
    assert found == [], "read the setting in config.py and pass it in:\n" + "\n".join(found)


def test_the_environment_rule_sees_a_settings_read() -> None:
    """Guards the guard: both spellings of a settings read are found."""
    probe = PACKAGE.parent / "churn_platform_tests" / "_layering_probe.py"
    probe.write_text(
        "from churn_platform import settings\n"
        "from churn_platform.settings import storage_url\n"
        "x = settings.get('CHURN_HOME')\n"
    )
    try:
        assert [name for _, name in _settings_reads(probe)] != []
        assert {name for _, name in _settings_reads(probe)} == {
            "settings.get",
            "settings.storage_url",
        }
    finally:
        probe.unlink()


def test_no_default_spec_fallback_in_core_resources_defs_or_serving() -> None:
    """A function that needs a spec takes it; the shipped spec is never a silent second default."""
    found = []
    for folder in ("core", "resources", "defs", "serving", "targets"):
        for path in _modules(folder):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if "default_spec()" in line and "def default_spec" not in line:
                    found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    # the one reader of models logged before specs existed: they were trained on the shipped spec
    allowed = {"churn_platform/core/spec.py"}
    assert [f for f in found if f.split(":")[0] not in allowed] == []


MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 80
# exceptions, each with its reason
LONG_MODULES: dict[str, str] = {}
LONG_FUNCTIONS: dict[str, str] = {}


def test_no_module_over_700_lines() -> None:
    found = {
        str(p.relative_to(REPO)): n
        for p in sorted(PACKAGE.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert {k: v for k, v in found.items() if k not in LONG_MODULES} == {}


def test_no_function_over_80_lines() -> None:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                name = f"{path.relative_to(REPO)}:{node.name}"
                if length > MAX_FUNCTION_LINES and name not in LONG_FUNCTIONS:
                    found[name] = length
    assert found == {}


def test_the_size_rules_would_see_a_long_module_and_function() -> None:
    """Guards the guards: the counting above finds what it is meant to find."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    tree = ast.parse(f"def f():\n{body}\n")
    node = tree.body[0]
    assert isinstance(node, ast.FunctionDef)
    assert (node.end_lineno or 0) - node.lineno + 1 > MAX_FUNCTION_LINES


LAYERS = ("core", "defs", "resources", "serving", "targets")


def test_each_module_file_name_says_one_thing():
    """No two modules of the package or of its layers share a file name (``metrics.py`` in
    ``core/`` and ``resources/`` read as one thing). A sub-package qualifies the names in it
    (``serving/router/app.py``); ``__init__`` and ``__main__`` are Python's own names."""
    seen: dict[str, list[str]] = {}
    folders = [PACKAGE, *(PACKAGE / layer for layer in LAYERS)]
    for path in sorted(p for folder in folders for p in folder.glob("*.py")):
        if path.stem not in ("__init__", "__main__"):
            seen.setdefault(path.name, []).append(str(path.relative_to(PACKAGE)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}
