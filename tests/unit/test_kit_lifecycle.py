"""The kit lifecycle (issue 12): one function moves a kit, checks the change against the lifecycle
and writes its history row (BLD-04, LBL-11). No database: a kit object and a session that only
collects what is added."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from allocator.audit import Actor
from allocator.models import Kit, KitEvent, KitStatus
from allocator.services.errors import Conflict
from allocator.services.supply.kit_rules import KIT_STEPS, LIFECYCLE, MANUAL_TRANSITIONS, move_kit

S = KitStatus
NOW = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
ACTOR = Actor(user_id=7, username="pharma", name="A Pharmacist", role="pharmacist")


class Collecting:
    def __init__(self) -> None:
        self.added: list[object] = []

    def add(self, row: object) -> None:
        self.added.append(row)


def kit(status: KitStatus) -> Kit:
    return Kit(id=11, kit_number="12345674", site_id=3, status=status.value)


def test_every_status_has_its_place_and_manual_changes_are_part_of_the_lifecycle() -> None:
    assert set(LIFECYCLE) == set(KitStatus)
    for source, targets in MANUAL_TRANSITIONS.items():
        assert targets <= LIFECYCLE[source], source
    # the workflow steps the use cases take
    assert S.IN_TRANSIT in LIFECYCLE[S.AT_DEPOT] and S.AVAILABLE in LIFECYCLE[S.IN_TRANSIT]
    assert S.ALLOCATED in LIFECYCLE[S.AVAILABLE] and S.DISPENSED in LIFECYCLE[S.ALLOCATED]
    assert S.ADMINISTERED in LIFECYCLE[S.DISPENSED]
    assert {name for name, _, _ in KIT_STEPS} >= {"shipping", "receipt", "dispensing", "bedside scan"}


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (S.ADMINISTERED, S.ALLOCATED),
        (S.AT_DEPOT, S.AVAILABLE),
        (S.DESTROYED, S.AVAILABLE),
        (S.LOST, S.AVAILABLE),
    ],
)
def test_a_change_outside_the_lifecycle_is_refused_and_writes_nothing(
    source: KitStatus, target: KitStatus
) -> None:
    session = Collecting()
    moved = kit(source)
    with pytest.raises(Conflict, match=f"a {source.value} kit cannot become {target.value}"):
        move_kit(session, moved, target, ACTOR, "a mistake", NOW)  # type: ignore[arg-type]
    assert session.added == [] and moved.status == source.value


def test_a_change_in_the_lifecycle_writes_its_history_row_then_the_status() -> None:
    session = Collecting()
    moved = kit(S.ALLOCATED)
    move_kit(session, moved, S.DISPENSED, ACTOR, "dispensed to 01-001 for D1", NOW)  # type: ignore[arg-type]
    assert moved.status == S.DISPENSED.value
    [event] = session.added
    assert isinstance(event, KitEvent)
    assert (event.kit_id, event.from_status, event.to_status, event.site_id) == (
        11,
        "allocated",
        "dispensed",
        3,
    )
    assert (event.actor_id, event.actor_name, event.reason, event.at) == (
        7,
        "A Pharmacist",
        "dispensed to 01-001 for D1",
        NOW,
    )
