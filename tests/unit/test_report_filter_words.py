"""A report's filter in the reader's words (REP-08: every report states its selection)."""

from __future__ import annotations

from datetime import date

import pytest

from allocator.services.reports.filters import ReportFilter
from allocator.wording import Words


@pytest.mark.req("REP-08")
def test_the_filter_reads_in_english_and_in_french_typography() -> None:
    english, french = Words.of("en"), Words.of("fr")
    assert ReportFilter().describe(english) == "every site within the reader's reach; whole trial"
    # French puts a space before a semicolon (seen on make demo: "au lecteur; tout l'essai").
    assert ReportFilter().describe(french) == "tous les centres accessibles au lecteur ; tout l'essai"
    dated = ReportFilter(site="P1", since=date(2026, 3, 1), until=date(2026, 3, 31))
    shown = dated.describe(french)
    assert shown.startswith("centre P1 ; ") and "; " not in shown.replace(" ; ", "")
    assert dated.describe(french, with_period=False) == "centre P1"
    assert dated.describe(english).startswith("site P1; ")
