"""Report PDF cells (issue 21): each distinct word and text is measured once per document, and the
cells are broken into the same lines as ReportLab's simpleSplit."""

from __future__ import annotations

import random

import pytest
from reportlab.lib.utils import simpleSplit

from allocator.printing import monitoring_reports as mr

WORDS = [
    "kit",
    "subject.randomized",
    "P01-00012",
    "Jean-François",
    "Łukasz",
    '{"a": 1}',
    "x" * 70,
    "été",
    "2026-12-05",
]


@pytest.mark.req("REP-05")
def test_a_cell_is_broken_into_the_lines_of_simplesplit_with_each_word_measured_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(21)
    cells = [
        "\n".join(
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 30))) for _ in range(rng.randint(1, 3))
        )
        for _ in range(300)
    ]
    measured: list[str] = []
    real = mr.stringWidth

    def counting(text: str, font: str, size: float) -> float:
        measured.append(text)
        return float(real(text, font, size))

    monkeypatch.setattr(mr, "stringWidth", counting)
    measures = mr._Measures()
    for width in (40.0, 120.0, 400.0):
        for text in cells:
            clean = mr.printable(text)
            expected = (
                clean
                if real(clean, mr.REGULAR, mr._CELL_SIZE) <= width - 2 * mr._CELL_PAD
                else "\n".join(simpleSplit(clean, mr.REGULAR, mr._CELL_SIZE, width - 2 * mr._CELL_PAD))
            )
            assert mr._wrapped(text, width, measures) == expected
    assert len(measured) == len(set(measured))  # never the same text twice
