"""Helpers shared by the benchmark scripts: paths, machine description, versions, timing,
the command line and writing the result file.

``benchmarks/`` is not a package. A script imports this module after putting its own
folder on ``sys.path``, which works when it is run as ``python benchmarks/<name>.py`` and
from ``run_all.py``::

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
    import _common as common  # noqa: E402

Importing this module also puts the repository root on ``sys.path``, so the scripts can
import ``churn_platform`` without installing it. Benchmarks never import the tests: what
both need (registered models, servers, Prometheus, a paced client) is
``churn_platform.testing``; the gate simulation is ``churn_platform.core.gate_simulation``.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TypeVar, cast

T = TypeVar("T")

BENCHMARKS = Path(__file__).resolve().parent
"""The ``benchmarks/`` folder."""
ROOT = BENCHMARKS.parent
"""The repository root."""
RESULTS_DIR = BENCHMARKS / "results"
"""Where the scripts write ``<name>.md`` by default."""

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def result_path(script: str | Path) -> Path:
    """The default result file of a script: ``benchmarks/results/<script stem>.md``."""
    return RESULTS_DIR / f"{Path(script).stem}.md"


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo``, or ``"unknown CPU"``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def memory_gib() -> float | None:
    """Total RAM in GiB (``MemTotal`` from ``/proc/meminfo``), or None if unreadable."""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return kib / 1024 / 1024


def load_text(values: Iterable[float] | None = None) -> str:
    """Load averages as ``"0.52, 0.80, 1.21"``; the current ones when ``values`` is None."""
    return ", ".join(f"{x:.2f}" for x in (os.getloadavg() if values is None else values))


def machine(*, memory: bool = False, load: bool = False) -> str:
    """``"<CPU model>, <n> cores visible"``, then ``", <m> GiB RAM"`` with ``memory`` and
    ``", load average <1, 5, 15 min>"`` with ``load``, for the results file."""
    text = f"{cpu_model()}, {os.cpu_count()} cores visible"
    gib = memory_gib() if memory else None
    if gib is not None:
        text += f", {gib:.0f} GiB RAM"
    if load:
        text += f", load average {load_text()}"
    return text


def platform_text() -> str:
    """``"<platform.platform()>, <n> CPUs"``, for the results file."""
    return f"{platform.platform()}, {os.cpu_count()} CPUs"


def versions(*packages: str) -> dict[str, str]:
    """Installed version per distribution name; packages that are not installed are left out."""
    found = {}
    for package in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


def versions_text(*packages: str) -> str:
    """``"numpy 2.1.0, pandas 2.2.3"`` for the installed ones of ``packages``."""
    return ", ".join(f"{k} {v}" for k, v in versions(*packages).items())


def utc_now() -> str:
    """The current UTC time to the second, ISO 8601 (``2026-01-31T12:00:00+00:00``)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _runs(fn: Callable[[], T], repeats: int, cpu: bool) -> tuple[list[float], list[float], T]:
    """Call ``fn`` ``repeats`` times: wall times, CPU times (empty unless ``cpu``), last result."""
    times: list[float] = []
    cpu_times: list[float] = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        start_cpu = time.process_time() if cpu else 0.0
        result = fn()
        times.append(time.perf_counter() - start)
        if cpu:
            cpu_times.append(time.process_time() - start_cpu)
    return times, cpu_times, cast(T, result)


def timed(fn: Callable[[], T], repeats: int) -> tuple[float, list[float], T]:
    """Median wall seconds over ``repeats`` calls of ``fn``, all wall timings, and the last
    result."""
    times, _, result = _runs(fn, repeats, cpu=False)
    return statistics.median(times), times, result


def timed_cpu(fn: Callable[[], T], repeats: int) -> tuple[float, list[float], T, float]:
    """As :func:`timed`, plus the median CPU seconds of this process per call (less
    sensitive to a busy shared machine than wall time)."""
    times, cpu_times, result = _runs(fn, repeats, cpu=True)
    return statistics.median(times), times, result, statistics.median(cpu_times)


def command_line(script: str | Path, args: Sequence[str] | None = None) -> str:
    """``.venv/bin/python benchmarks/<script> [args]``, as recorded in a results file;
    ``args`` defaults to this process's command-line arguments."""
    args = sys.argv[1:] if args is None else args
    return " ".join([f".venv/bin/python benchmarks/{Path(script).name}", *args])


def write_result(out: str | Path, text: str, *, echo: bool = True, announce: bool = False) -> Path:
    """Write ``text`` to ``out`` (creating its folder); print it with ``echo``, and
    ``wrote <out>`` with ``announce``. Returns the path written."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if echo:
        print(text)
    if announce:
        print(f"wrote {out}")
    return path


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a rate ``k / n`` (95% by default), for simulated rates."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
