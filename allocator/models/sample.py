"""The sample kits of an observational study (issue 20): pre-labelled tube sets stocked at a site,
each assigned at registration to one planned sample of one participant, collected at the bedside by
scan, shipped to the central lab and received there by scan. Their own tables, beside the drug
kits: a tube set has no arm, no batch, no expiry of the drug's kind and is never drawn for an
allocation, so no drug-stock query ever has to filter it out.

`sample_kit` holds each tube set's current state; `sample_kit_event` every change of it
(append-only, as `kit_event`); `lab_shipment` a box of collected samples sent from a site to the
central lab, with its printed manifest (a QR per shipment) and its receipt at the lab."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from allocator.models.base import Base


class SampleKitStatus(enum.StrEnum):
    AVAILABLE = "available"  # stocked at its site, not yet anyone's
    ASSIGNED = "assigned"  # to one planned sample of one participant, at registration
    COLLECTED = "collected"  # the blood drawn into it, scanned at the bedside
    SHIPPED = "shipped"  # in a lab shipment on its way to the central lab
    RECEIVED = "received"  # received at the central lab, usable
    UNUSABLE = "unusable"  # at the lab (haemolysed, leaked, too late...) or at the site: with a reason
    MISSED = "missed"  # its planned sample was not collected in its window: with a reason
    DAMAGED = "damaged"  # an unassigned tube set spoiled at the site (broken, expired tubes)


class LabShipmentStatus(enum.StrEnum):
    PREPARED = "prepared"
    SHIPPED = "shipped"
    RECEIVED = "received"


class LabShipment(Base):
    """Collected samples sent from one site to the central lab, with a printed manifest."""

    __tablename__ = "lab_shipment"
    __table_args__ = (UniqueConstraint("trial_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    number: Mapped[str] = mapped_column(String(20))  # e.g. LS-0001, in the manifest's QR
    status: Mapped[str] = mapped_column(String(12), default=LabShipmentStatus.PREPARED.value)
    sample_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_by_name: Mapped[str] = mapped_column(String(200))
    shipped_at: Mapped[datetime | None]
    shipped_by_name: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[datetime | None]
    received_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    received_by_name: Mapped[str | None] = mapped_column(String(200))


class SampleKit(Base):
    """One pre-labelled tube set (its number in the QR payload with the unit ``S-00``)."""

    __tablename__ = "sample_kit"
    __table_args__ = (
        UniqueConstraint("trial_id", "kit_number"),
        # A site's unassigned tube sets of a type, for the assignment at registration.
        Index("ix_sample_kit_site_status_id", "site_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    kit_number: Mapped[str] = mapped_column(String(8))  # random digits + Damm check digit, as drug kits
    kit_type: Mapped[str] = mapped_column(String(16))  # the definition's [[kit_types]] id
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))  # where it is stocked and collected
    status: Mapped[str] = mapped_column(String(16), default=SampleKitStatus.AVAILABLE.value)
    created_at: Mapped[datetime]
    created_by_name: Mapped[str] = mapped_column(String(200))
    # At registration: the one planned sample it is for (never reassigned to another).
    planned_sample_id: Mapped[int | None] = mapped_column(ForeignKey("planned_sample.id"), unique=True)
    assigned_at: Mapped[datetime | None]
    # The bedside collection scan: when the blood was drawn (UTC) and who drew it.
    collected_at: Mapped[datetime | None]
    collected_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    collected_by_name: Mapped[str | None] = mapped_column(String(200))
    collection_recorded_at: Mapped[datetime | None]  # when the scan was recorded (late entries)
    # Its shipment to the central lab, and the lab's receipt (pre-analytical delay:
    # received_at - collected_at).
    lab_shipment_id: Mapped[int | None] = mapped_column(ForeignKey("lab_shipment.id"), index=True)
    received_at: Mapped[datetime | None]
    received_by_name: Mapped[str | None] = mapped_column(String(200))
    # Why it is unusable, missed or damaged (the lab's or the site's words).
    reason: Mapped[str | None] = mapped_column(String(500))


class SampleKitEvent(Base):
    """Every status change of a tube set, with its reason and author. Append-only."""

    __tablename__ = "sample_kit_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_kit_id: Mapped[int] = mapped_column(ForeignKey("sample_kit.id"), index=True)
    at: Mapped[datetime]
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    actor_name: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
