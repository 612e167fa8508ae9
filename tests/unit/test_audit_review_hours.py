"""The off-hours review reads the trial's zone once per hour where every minute of the hour has
the same whole-hour offset (issue 21): for every minute around the changes of offset of zones with
and without summer time, with whole-hour and half-hour offsets, it finds the same working hours,
local time cell and moment (as shown), and words the local time in the reader's language the same
way, as when it read the zone minute by minute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from allocator.services.reports import audit_review
from allocator.services.reports.filters import ReportFilter
from allocator.wording import ENGLISH, Words

# Each zone with a day on which its offset changes (or not), in 2026.
ZONES = (
    ("Europe/Paris", "2026-03-29"),  # +1 -> +2 at 01:00 UTC
    ("Europe/Paris", "2026-10-25"),  # +2 -> +1: the local hour 02:00-03:00 twice
    ("Asia/Kolkata", "2026-03-01"),  # +5:30, no summer time
    ("America/St_Johns", "2026-03-08"),  # -3:30 -> -2:30
    ("Australia/Lord_Howe", "2026-04-05"),  # +11 -> +10:30: half an hour
    ("Pacific/Chatham", "2026-04-05"),  # +13:45 -> +12:45
    ("UTC", "2026-03-01"),
)


@pytest.mark.req("AUD-09")
@pytest.mark.parametrize(("zone_name", "day"), ZONES)
def test_an_hour_read_once_is_each_of_its_minutes_read_alone(zone_name: str, day: str) -> None:
    zone = ZoneInfo(zone_name)
    flt = ReportFilter(hours_from=8, hours_to=20)
    start = datetime.fromisoformat(f"{day}T00:00:00+00:00") - timedelta(hours=24)
    by_hour = 0
    languages = [(words, audit_review._Known(words)) for words in (ENGLISH, Words.of("fr"))]
    for step in range(0, 72 * 60, 7):  # every seventh minute of three days
        at = start + timedelta(minutes=step, seconds=step % 60, microseconds=step)
        recorded = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        expected_moment, expected_working, expected_cell = audit_review._minute(
            datetime.fromisoformat(recorded), zone, flt
        )
        hour = audit_review._hour(recorded[:13], zone, flt)
        if hour is None:
            continue
        by_hour += 1
        begin, working, before, after = hour
        moment = begin.replace(minute=int(recorded[14:16]))
        assert working == expected_working, recorded
        assert f"{before}{recorded[14:16]}{after}" == expected_cell, recorded
        assert ENGLISH.local(moment) == ENGLISH.local(expected_moment), recorded
        for words, known in languages:
            # The words of the local time put around the minutes once per hour: the same text.
            assert known.in_hour(recorded[:13], moment) == words.local(expected_moment), recorded
        assert moment.astimezone(UTC).replace(second=0, microsecond=0) == at.replace(second=0, microsecond=0)
    # Read per hour wherever the offset is whole hours (Lord Howe's +11 before its change), never
    # where it has minutes: those are judged minute by minute, as before.
    assert (by_hour > 0) == (zone_name in ("Europe/Paris", "UTC", "Australia/Lord_Howe")), by_hour
