"""Unblindings and everything around them (UNB-01 to UNB-11).

Every row here is append-only (guarded by triggers): an unblinding, once recorded, can be neither
hidden nor deleted (UNB-05). The arm itself is never stored in these rows: it is read, audited, from
the subject's slot when (and only when) someone entitled to it asks.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from allocator.models.base import Base


class UnblindingKind(enum.StrEnum):
    EMERGENCY = "emergency"  # the treating investigator, for the subject's care (UNB-01)
    PHARMACOVIGILANCE = "pharmacovigilance"  # expedited safety reporting, seen by PV only (UNB-08)


class UnblindingChannel(enum.StrEnum):
    ONLINE = "online"  # through this service
    OFFLINE = "offline"  # a sealed code-break sheet opened while the service was unreachable (UNB-06)


class Unblinding(Base):
    """One subject's blind broken for one person: who, role, site, when, why, how reached."""

    __tablename__ = "unblinding"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))
    kind: Mapped[str] = mapped_column(String(20))
    channel: Mapped[str] = mapped_column(String(10))
    reason_category: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text)
    # When the arm was learnt: now for the online path, the opening time of the sheet offline.
    unblinded_at: Mapped[datetime]
    # The person who learnt the arm (offline: as reported by the one registering the opening).
    unblinded_by_name: Mapped[str] = mapped_column(String(200))
    unblinded_by_role: Mapped[str] = mapped_column(String(32))
    code_break_sheet_id: Mapped[int | None] = mapped_column(ForeignKey("code_break_sheet.id"))
    recorded_at: Mapped[datetime]
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    recorded_by_name: Mapped[str] = mapped_column(String(200))
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))
    request_id: Mapped[str] = mapped_column(String(64))


class AccidentalUnblinding(Base):
    """A report of an unplanned unblinding (UNB-09): who was unblinded, how, the impact and the
    actions taken. It names a subject when one subject's arm was exposed."""

    __tablename__ = "accidental_unblinding"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("subject.id"), index=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"))
    occurred_at: Mapped[datetime]
    persons_unblinded: Mapped[str] = mapped_column(Text)
    how: Mapped[str] = mapped_column(Text)
    impact: Mapped[str] = mapped_column(Text)
    actions: Mapped[str] = mapped_column(Text)
    reported_at: Mapped[datetime]
    reported_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    reported_by_name: Mapped[str] = mapped_column(String(200))
    reported_by_role: Mapped[str] = mapped_column(String(32))


class TrialStateChange(Base):
    """A signed step of the planned unblinding: ACTIVE -> LOCKED -> UNBLINDED (UNB-10, BLD-09)."""

    __tablename__ = "trial_state_change"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    from_status: Mapped[str] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    changed_at: Mapped[datetime]
    changed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    changed_by_name: Mapped[str] = mapped_column(String(200))
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))


class CodeBreakSheet(Base):
    """A sealed paper code-break sheet for one kit, the offline fallback (UNB-06, UNB-07). The
    printed document is in printed_document (its id here); the arm is only on the paper."""

    __tablename__ = "code_break_sheet"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    kit_id: Mapped[int] = mapped_column(ForeignKey("kit.id"), index=True)
    sheet_number: Mapped[str] = mapped_column(String(40), unique=True)
    document_id: Mapped[str] = mapped_column(String(40))
    # A sheet reported lost is replaced by a new one; the old one stays (and stays reconcilable).
    replaces_id: Mapped[int | None] = mapped_column(ForeignKey("code_break_sheet.id"))
    generated_at: Mapped[datetime]
    generated_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    generated_by_name: Mapped[str] = mapped_column(String(200))
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))


class CodeBreakCheckStatus(enum.StrEnum):
    INTACT = "intact"
    OPENED = "opened"
    MISSING = "missing"


class CodeBreakCheck(Base):
    """A monitor's (or pharmacist's) check of a sheet: intact, opened or missing, for the
    reconciliation of opened and unopened sheets. An opened sheet without a registered offline
    unblinding is a discrepancy."""

    __tablename__ = "code_break_check"

    id: Mapped[int] = mapped_column(primary_key=True)
    sheet_id: Mapped[int] = mapped_column(ForeignKey("code_break_sheet.id"), index=True)
    status: Mapped[str] = mapped_column(String(10))
    note: Mapped[str] = mapped_column(Text, default="")
    checked_at: Mapped[datetime]
    checked_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    checked_by_name: Mapped[str] = mapped_column(String(200))


class InterimPackage(Base):
    """An unblinded interim data package released to the unblinded statistician for a DSMB look
    (REP-08, BLD-09): signed, audited; its content digest is kept, never its content."""

    __tablename__ = "interim_package"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    purpose: Mapped[str] = mapped_column(Text)
    subjects: Mapped[int] = mapped_column(Integer)
    content_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_by_name: Mapped[str] = mapped_column(String(200))
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))
