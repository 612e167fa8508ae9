"""How long the randomization design quality report takes (allocator.randomization.quality/report).

Run from the repository root: ``.venv/bin/python bench/bench_quality.py``. For n = 170 (the first
trial) and n = 1000, it times the exact report of permuted blocks {2, 4, 6} against the standard
alternatives (fixed blocks 2-8, RAR, CR, big stick and maximal procedure with b = 3, Efron's coin),
with four strata, then the text, SVG and PDF renderings. Timings are the best of a few repeats.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from allocator.printing.quality_report import (
    render_pdf,
    render_svg_balance,
    render_svg_imbalance_distribution,
    render_text,
)
from allocator.randomization.quality import (
    PermutedBlocks,
    QualityReport,
    quality_report,
    standard_alternatives,
    stratum_sizes_for,
)

REPEATS = 3


def best_of(action: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    design = PermutedBlocks((2, 4, 6))
    alternatives = standard_alternatives(design)
    for n in (170, 1000):
        holder: list[QualityReport] = []

        def build(n: int = n, holder: list[QualityReport] = holder) -> None:
            holder[:] = [
                quality_report(
                    design,
                    n,
                    alternatives,
                    simulation_seed=1,
                    simulations=200_000,
                    stratum_sizes=stratum_sizes_for(n, 4),
                )
            ]

        compute = best_of(build)
        report = holder[0]

        def svgs(report: QualityReport = report) -> None:
            render_svg_balance(report)
            render_svg_imbalance_distribution(report)

        def pdf_bytes(report: QualityReport = report) -> None:
            render_pdf(report, title="bench", generated_at="bench", software_version="bench", test_mode=False)

        def text_only(report: QualityReport = report) -> None:
            render_text(report)

        text = best_of(text_only)
        svg = best_of(svgs)
        pdf = best_of(pdf_bytes)
        exact = "all exact" if report.all_exact else "some simulated"
        print(
            f"n = {n:5d}: report {compute:6.3f} s ({len(report.designs)} designs, {exact}); "
            f"text {text:6.3f} s; SVG x2 {svg:6.3f} s; PDF {pdf:6.3f} s"
        )


if __name__ == "__main__":
    main()
