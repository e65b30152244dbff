"""The benchmark tables say what the result files say: every script has its row and result
file, and every decimal figure of the headline tables (``benchmarks/README.md`` and the
README's "Benchmarks" table) is a figure of some ``benchmarks/results/*.md``, at the
precision shown. A re-run that changes a result without its README row fails here."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
NUMBER = re.compile(r"(?<![\d.\-e])\d+\.\d+(?![\d.]|e-)")


def _rows(text: str, start: str, end: str) -> list[str]:
    section = text.split(start, 1)[1].split(end, 1)[0]
    return [
        line for line in section.splitlines() if line.startswith("| ") and "---" not in line[:5]
    ][1:]  # without the header row


def _result_figures() -> list[Decimal]:
    text = "\n".join(p.read_text() for p in sorted((BENCH / "results").glob("*.md")))
    return [Decimal(n) for n in re.findall(r"\d+\.\d+|\d+", text.replace(",", ""))]


def _shown(figure: str, results: list[Decimal]) -> bool:
    want = Decimal(figure)
    step = Decimal(1).scaleb(want.as_tuple().exponent)  # type: ignore[arg-type]
    return any(
        x.quantize(step, rounding=ROUND_HALF_UP) == want for x in results if abs(x - want) <= step
    )


def _unmatched(rows: list[str], results: list[Decimal]) -> list[str]:
    return [
        f"{n} in {row[:70]!r}"
        for row in rows
        for n in NUMBER.findall(row.replace(",", ""))
        if not _shown(n, results)
    ]


def test_every_script_has_its_row_and_its_result_file() -> None:
    readme = (BENCH / "README.md").read_text()
    scripts = sorted(p.name for p in BENCH.glob("*.py") if p.stem.startswith(("bench_", "sim")))
    listed = re.findall(r"^\| `([a-z_]+\.py)` \|", readme, flags=re.M)
    assert sorted(listed) == scripts
    named = set(re.findall(r"results/([a-z_]+\.md)", readme))
    files = {p.name for p in (BENCH / "results").glob("*.md")}
    assert named == files
    assert {f"{Path(s).stem}.md" for s in scripts} == files


def test_the_headline_figures_are_the_result_files_figures() -> None:
    results = _result_figures()
    bench = (BENCH / "README.md").read_text()
    readme = (REPO / "README.md").read_text()
    rows = _rows(bench, "## Headline results", "Notes on reading them")
    rows += _rows(readme, "\n## Benchmarks\n", "\n### ")
    assert len(rows) > 20
    assert _unmatched(rows, results) == []


def test_the_guard_sees_a_figure_no_result_file_holds() -> None:
    results = [Decimal("13.93"), Decimal("0.329")]
    assert _unmatched(["| join | 13.9 s | 0.33 s |"], results) == []
    assert _unmatched(["| join | 14.2 s |"], results) == ["14.2 in '| join | 14.2 s |'"]
