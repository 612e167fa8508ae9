"""Unblinding drills (UNB-11): drill subjects and the drills run on them.

A drill exercises the emergency-unblinding path (the same form, signature, notifications and
result page) on a subject that is not a patient. Drill subjects live here, never in `subject`:
they hold no slot, no kit and no screening entry, so no count, report, export or analysis that
reads subjects, slots or kits can include them. Their "arm" is a value drawn at random for the
drill and sealed like a slot, so that a drill also proves the list key opens. Append-only.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from allocator.models.base import Base


class DrillSubject(Base):
    """A subject that exists only for unblinding drills at one site, numbered DRILL-<site>-<n>."""

    __tablename__ = "drill_subject"
    __table_args__ = (UniqueConstraint("trial_id", "drill_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))
    drill_number: Mapped[str] = mapped_column(String(32))
    # A trial arm drawn at random for the drill, sealed (BLD-05): it is nobody's treatment.
    sealed_arm: Mapped[bytes] = mapped_column(LargeBinary)
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_by_name: Mapped[str] = mapped_column(String(200))


class UnblindingDrill(Base):
    """One drill: the drill subject's blind broken online, or its drill code-break sheet opened and
    registered. The same facts as an unblinding record, kept apart from them."""

    __tablename__ = "unblinding_drill"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    drill_subject_id: Mapped[int] = mapped_column(ForeignKey("drill_subject.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))
    channel: Mapped[str] = mapped_column(String(10))  # online | offline
    reason_category: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text)
    unblinded_at: Mapped[datetime]
    unblinded_by_name: Mapped[str] = mapped_column(String(200))
    unblinded_by_role: Mapped[str] = mapped_column(String(32))
    # Offline drills: the drill sheet's number, as printed (DRILL-CB-<drill number>).
    sheet_number: Mapped[str | None] = mapped_column(String(48))
    recorded_at: Mapped[datetime]
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    recorded_by_name: Mapped[str] = mapped_column(String(200))
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))
    request_id: Mapped[str] = mapped_column(String(64))
