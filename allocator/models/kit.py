"""Kit lists, batches, kits, their status history and shipments. Arms only sealed (BLD-05)."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import date, datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from allocator.models.base import Base


class KitStatus(enum.StrEnum):
    AT_DEPOT = "at_depot"
    IN_TRANSIT = "in_transit"
    AVAILABLE = "available"  # received at a site, usable
    ALLOCATED = "allocated"  # assigned to a subject and day, not yet dispensed
    DISPENSED = "dispensed"
    ADMINISTERED = "administered"
    RETURNED = "returned"
    DAMAGED = "damaged"
    LOST = "lost"
    QUARANTINED = "quarantined"  # e.g. temperature excursion (LBL-05)
    EXPIRED = "expired"
    DESTROYED = "destroyed"
    # A new status goes at the end: its place is its bit in `kit.ever_statuses` (migration 0023).


def status_bit(status: str) -> int:
    """The bit of `status` in `Kit.ever_statuses`: 1 << its place in KitStatus."""
    return _STATUS_BITS[status]


def status_bits(statuses: Iterable[str]) -> int:
    """The bits of `statuses` together (a value that is no status, hand-written, counts nothing)."""
    bits = 0
    for status in statuses:
        bits |= _STATUS_BITS.get(status, 0)
    return bits


_STATUS_BITS = {status.value: 1 << place for place, status in enumerate(KitStatus)}


class KitList(Base):
    __tablename__ = "kit_list"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    label: Mapped[str] = mapped_column(String(64), unique=True)  # e.g. IFNG-PAIS/TEST/KITS/1
    mode: Mapped[str] = mapped_column(String(12))
    source: Mapped[str] = mapped_column(String(16))  # generated | imported
    source_name: Mapped[str | None] = mapped_column(String(300))  # imported file name
    kit_count: Mapped[int] = mapped_column(Integer)
    content_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_by_name: Mapped[str] = mapped_column(String(200))


class Batch(Base):
    """A packaging lot with one expiry date. The lot code is blinded: batches mix both arms."""

    __tablename__ = "batch"
    __table_args__ = (UniqueConstraint("trial_id", "lot_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    lot_code: Mapped[str] = mapped_column(String(32))
    expiry_date: Mapped[date]
    created_at: Mapped[datetime]


class Shipment(Base):
    __tablename__ = "shipment"
    __table_args__ = (UniqueConstraint("trial_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))
    number: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(12))  # prepared | shipped | received
    kit_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    created_by_name: Mapped[str] = mapped_column(String(200))
    shipped_at: Mapped[datetime | None]
    shipped_by_name: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[datetime | None]
    received_by_name: Mapped[str | None] = mapped_column(String(200))


class Kit(Base):
    __tablename__ = "kit"
    __table_args__ = (
        UniqueConstraint("trial_id", "kit_number"),
        # The kit draw's id range of a site's available kits, in two index look-ups (issue 16).
        Index("ix_kit_site_status_id", "site_id", "status", "id"),
        # The resupply check's kits quarantined on the way, per open shipment (issue 19).
        Index("ix_kit_shipment_status", "shipment_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    kit_list_id: Mapped[int] = mapped_column(ForeignKey("kit_list.id"))
    kit_number: Mapped[str] = mapped_column(String(8))  # random digits + Damm check digit (BLD-03)
    kit_type: Mapped[str] = mapped_column(String(16))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batch.id"))
    expiry_date: Mapped[date | None]
    sealed_arm: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default=KitStatus.AT_DEPOT.value)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"), index=True)
    shipment_id: Mapped[int | None] = mapped_column(ForeignKey("shipment.id"))
    created_at: Mapped[datetime]
    # Issue 19: set when its batch's expiry changed and its printed label no longer shows the right
    # date; cleared when the new label is confirmed by scan. Until then it is neither drawn for an
    # allocation nor dispensed.
    relabel_requested_at: Mapped[datetime | None]
    # Issue 21: every status the kit ever entered, one bit per status (`status_bit` below), set
    # with the status by every change, so that the reconciliation counts "ever in X" from the kits
    # rather than from their whole histories. Checked against the history by the reconciliation.
    ever_statuses: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class KitCheck(Base):
    """The last whole check of a trial's kit histories (issue 21), so that the reconciliation pages
    check only the kits that moved since, as the audit pages do with `audit_verification`. Events
    up to `through_event_id` and kits up to `through_kit_id` were checked; `suspects` lists (JSON)
    the kits whose records did not agree then: they are checked again on every view. Signed with
    the audit key (its own domain): a row edited by hand is ignored and every kit checked again."""

    __tablename__ = "kit_check"

    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), primary_key=True)
    through_event_id: Mapped[int] = mapped_column(BigInteger)
    through_kit_id: Mapped[int] = mapped_column(BigInteger)
    suspects: Mapped[str] = mapped_column(Text)
    checked_at: Mapped[datetime]
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[bytes] = mapped_column(LargeBinary)


class KitEvent(Base):
    """Every status change of a kit, with its reason and author. Append-only."""

    __tablename__ = "kit_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    kit_id: Mapped[int] = mapped_column(ForeignKey("kit.id"), index=True)
    at: Mapped[datetime]
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    actor_name: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
