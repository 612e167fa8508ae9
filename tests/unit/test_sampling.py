"""The cohort's sample schedule on the central lab's working days (issue 20): weekends, French public
holidays (the `holidays` package) and the lab's own closures are skipped within the D3/D4 window."""

from __future__ import annotations

from datetime import date

import pytest

from allocator.sampling import is_working_day, plan, public_holiday_name
from allocator.trialdef import Sampling, Timepoint, load_definition
from tests.support import ROOT

SAMPLING = load_definition(ROOT / "trials" / "immunosepsis-4.toml")[0].sampling
assert SAMPLING is not None


def test_a_weekday_due_day_is_kept() -> None:
    # Onset Monday 2 March 2026: D3 is Thursday 5 March, a working day.
    [d3] = plan(SAMPLING, date(2026, 3, 2))
    assert (d3.label, d3.kit_type, d3.due, d3.window_end, d3.planned) == (
        "D3",
        "BIOMARKER",
        date(2026, 3, 5),
        date(2026, 3, 6),
        date(2026, 3, 5),
    )
    assert not d3.moved


def test_a_weekend_is_skipped() -> None:
    # Onset Wednesday 4 March 2026: D3 is Saturday 7 March, D4 Sunday 8 March: no working day.
    [d3] = plan(SAMPLING, date(2026, 3, 4))
    assert d3.due == date(2026, 3, 7) and d3.planned is None
    # Onset Tuesday 3 March: D3 is Friday 6 March (kept); onset Thursday 5 March: D3 is Sunday 8,
    # D4 Monday 9 March, the sample moves to the Monday.
    [kept] = plan(SAMPLING, date(2026, 3, 3))
    assert kept.planned == date(2026, 3, 6)
    [moved] = plan(SAMPLING, date(2026, 3, 5))
    assert moved.due == date(2026, 3, 8) and moved.planned == date(2026, 3, 9) and moved.moved


def test_a_french_public_holiday_is_skipped() -> None:
    # Ascension Thursday 14 May 2026 is a French public holiday (not a weekend).
    assert public_holiday_name("FR", date(2026, 5, 14)) == "Ascension Day"
    assert not is_working_day(SAMPLING, date(2026, 5, 14))
    # Onset Monday 11 May: D3 falls on Ascension Thursday, the sample moves to Friday 15 May (D4).
    [d3] = plan(SAMPLING, date(2026, 5, 11))
    assert d3.due == date(2026, 5, 14) and d3.planned == date(2026, 5, 15) and d3.moved
    # Bastille Day Tuesday 14 July 2026 and the Wednesday after: D3 on the 14th moves to the 15th.
    [d3] = plan(SAMPLING, date(2026, 7, 11))
    assert d3.due == date(2026, 7, 14) and d3.planned == date(2026, 7, 15)


def test_a_lab_closure_is_skipped_and_can_empty_the_window() -> None:
    closed = {date(2026, 3, 5)}
    [d3] = plan(SAMPLING, date(2026, 3, 2), closed)
    assert d3.planned == date(2026, 3, 6)
    [none] = plan(SAMPLING, date(2026, 3, 2), closed | {date(2026, 3, 6)})
    assert none.planned is None


@pytest.mark.parametrize(("weekdays", "expected"), [((1, 2, 3, 4, 5, 6), date(2026, 3, 7)), ((1,), None)])
def test_the_working_weekdays_come_from_the_definition(
    weekdays: tuple[int, ...], expected: date | None
) -> None:
    lab = Sampling(
        anchor="x",
        working_weekdays=weekdays,
        holidays_country="FR",
        timepoints=(Timepoint(label="D3", day=3, last_day=4, kit_type="K"),),
    )
    [d3] = plan(lab, date(2026, 3, 4))  # D3 Saturday 7, D4 Sunday 8 March
    assert d3.planned == expected
