"""The sample schedule of an observational study on the central lab's working days (issue 20).

Each timepoint of the definition's `[sampling]` is due `day` days after the anchor date (day 0) and
may be taken up to `last_day`. It is planned on the first lab working day from its due day: a
working weekday of the definition that is neither a public holiday of `holidays_country` (from the
`holidays` package) nor a closure entered by the lab manager. A timepoint whose window holds no
working day cannot be planned: the patient cannot give that sample (for IMMUNOSEPSIS-4 that is an
inclusion criterion, "blood sample at D3/D4 available on lab working days").

Pure: takes the definition's schedule, the anchor date and the closures explicitly.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

import holidays

from allocator.trialdef import Sampling, Timepoint


@dataclass(frozen=True, slots=True)
class PlannedDate:
    label: str
    kit_type: str
    due: date
    window_end: date
    planned: date | None  # None: no lab working day in the window

    @property
    def moved(self) -> bool:
        """Planned later than its due day (a weekend, a holiday or a closure on the due day)."""
        return self.planned is not None and self.planned != self.due


@lru_cache(maxsize=64)
def _public_holidays(country: str, year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays(country, years=year))


def public_holiday_name(country: str, day: date, language: str = "en") -> str | None:
    """The name of the public holiday on `day` in `language` ("en" or "fr"; the `holidays`
    package's own names), if it is one."""
    if day not in _public_holidays(country, day.year):
        return None
    wanted = "fr" if language == "fr" else "en_US"
    return str(holidays.country_holidays(country, years=day.year, language=wanted).get(day))


def is_working_day(sampling: Sampling, day: date, closures: Collection[date] = ()) -> bool:
    return (
        day.isoweekday() in sampling.working_weekdays
        and day not in _public_holidays(sampling.holidays_country, day.year)
        and day not in closures
    )


def plan_one(
    sampling: Sampling, timepoint: Timepoint, anchor: date, closures: Collection[date] = ()
) -> PlannedDate:
    due = anchor + timedelta(days=timepoint.day)
    end = anchor + timedelta(days=timepoint.last_day)
    planned = None
    day = due
    while day <= end:
        if is_working_day(sampling, day, closures):
            planned = day
            break
        day += timedelta(days=1)
    return PlannedDate(timepoint.label, timepoint.kit_type, due, end, planned)


def plan(sampling: Sampling, anchor: date, closures: Collection[date] = ()) -> tuple[PlannedDate, ...]:
    """Every timepoint of the schedule, planned from `anchor` (day 0)."""
    return tuple(plan_one(sampling, tp, anchor, closures) for tp in sampling.timepoints)
