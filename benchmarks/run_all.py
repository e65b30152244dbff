"""Run every benchmark script in ``benchmarks/`` in turn and say where the results went.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only bench_psi bench_graph] [--skip ...]
                                           [--out-dir DIR]

``--quick`` is passed to the scripts that accept it (they declare a ``--quick`` option);
the others run with their defaults. Each script writes ``benchmarks/results/<name>.md``, or
``DIR/<name>.md`` with ``--out-dir`` (passed as ``--out`` to every script that takes one), so a
quick smoke run need not overwrite the recorded results. The runner reports, per script, its
exit code, its run time and whether its result file was written by this run; it exits
non-zero when any script failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import _common as common  # noqa: E402

HERE = common.BENCHMARKS
RESULTS = common.RESULTS_DIR

SELF = Path(__file__).name


def scripts() -> list[Path]:
    """Every benchmark script: ``bench_*.py`` and ``simulate_*.py``, fast ones first."""
    found = sorted(p for p in HERE.glob("*.py") if p.name != SELF and not p.name.startswith("_"))
    order = {  # quick, CPU-bound ones first; the long, process-heavy ones last
        "bench_paired_bootstrap": 0,
        "bench_psi": 1,
        "bench_contract": 2,
        "bench_spec": 3,
        "simulate_promotion": 4,
        "bench_serving": 5,
        "bench_rollback": 6,
        "bench_graph": 7,
        "bench_spark": 8,
        "bench_scoring": 9,
    }
    return sorted(found, key=lambda p: (order.get(p.stem, 99), p.stem))


def supports(script: Path, option: str) -> bool:
    """True when the script declares ``option`` (e.g. ``--quick``) in its argument parser."""
    return f'"{option}"' in script.read_text()


def main(argv: list[str] | None = None) -> int:
    """Run the selected scripts; print a table of outcomes and result files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick where supported")
    parser.add_argument("--only", nargs="+", default=None, help="script names (without .py)")
    parser.add_argument("--skip", nargs="+", default=[], help="script names to leave out")
    parser.add_argument("--out-dir", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)

    chosen = [
        p
        for p in scripts()
        if (args.only is None or p.stem in args.only) and p.stem not in args.skip
    ]
    unknown = set(args.only or []) - {p.stem for p in scripts()}
    if unknown:
        parser.error(f"no such benchmark: {', '.join(sorted(unknown))}")

    outcomes = []
    for script in chosen:
        cmd = [sys.executable, str(script)]
        if args.quick and supports(script, "--quick"):
            cmd.append("--quick")
        out = RESULTS / f"{script.stem}.md"
        if args.out_dir is not None and supports(script, "--out"):
            args.out_dir.mkdir(parents=True, exist_ok=True)
            out = args.out_dir.resolve() / f"{script.stem}.md"
            cmd += ["--out", str(out)]
        before = out.stat().st_mtime if out.exists() else None
        print(f"\n=== {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        code = subprocess.run(cmd, cwd=str(HERE.parent)).returncode
        seconds = time.perf_counter() - start
        written = out.exists() and out.stat().st_mtime != before
        outcomes.append((script.stem, code, seconds, out, written, "--quick" in cmd))

    print("\n| benchmark | exit | seconds | results |")
    print("|---|---:|---:|---|")
    for name, code, seconds, out, written, quick in outcomes:
        shown = out.relative_to(HERE.parent) if out.is_relative_to(HERE.parent) else out
        where = str(shown) if written else f"(not written; {shown} unchanged)"
        print(f"| {name}{' --quick' if quick else ''} | {code} | {seconds:.0f} | {where} |")
    return 1 if any(code != 0 for _, code, *_ in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
