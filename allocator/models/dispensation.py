"""Kit allocations per subject and day, dispensing, administration, printed documents."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from allocator.models.base import Base


class Dispensation(Base):
    """The kit allocated to a subject for one dispensing day. A lost or damaged kit is replaced by
    a new row with the next `replacement_number`; the old row stays (nothing is deleted)."""

    __tablename__ = "dispensation"
    __table_args__ = (UniqueConstraint("subject_id", "day", "replacement_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    day: Mapped[int] = mapped_column(Integer)
    replacement_number: Mapped[int] = mapped_column(Integer, default=0)
    kit_id: Mapped[int] = mapped_column(ForeignKey("kit.id"), unique=True)  # one subject per kit
    status: Mapped[str] = mapped_column(String(16))  # allocated | dispensed | administered | replaced
    allocated_at: Mapped[datetime]
    dispensed_at: Mapped[datetime | None]
    dispensed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    dispensed_by_name: Mapped[str | None] = mapped_column(String(200))
    dispensing_signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))
    replaced_at: Mapped[datetime | None]
    replacement_reason: Mapped[str | None] = mapped_column(Text)


class Administration(Base):
    """A recorded bedside administration. One per dispensed kit; never updated."""

    __tablename__ = "administration"

    id: Mapped[int] = mapped_column(primary_key=True)
    dispensation_id: Mapped[int] = mapped_column(ForeignKey("dispensation.id"), unique=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    day: Mapped[int] = mapped_column(Integer)
    administered_at: Mapped[datetime]  # the time stated by the nurse
    recorded_at: Mapped[datetime]  # server time of the record (DIB-01)
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    recorded_by_name: Mapped[str] = mapped_column(String(200))
    late_entry_reason: Mapped[str | None] = mapped_column(Text)


class PrintedDocument(Base):
    """Every generated sheet or label print; reprints are counted and marked DUPLICATA."""

    __tablename__ = "printed_document"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    document_id: Mapped[str] = mapped_column(String(40), unique=True)
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("subject.id"))
    items: Mapped[list[str]] = mapped_column(JSON, default=list)  # kit numbers on the document
    reprint_of: Mapped[str | None] = mapped_column(String(40))  # document id of the original print
    reprint_number: Mapped[int] = mapped_column(Integer, default=0)
    content_sha256: Mapped[str] = mapped_column(String(64))
    # The exact bytes printed (dispensation sheets): viewing a printed document serves them again
    # and creates nothing. Kept rather than re-rendered: the sheet carries its print time, reprint
    # number and signature as they were, and a later change (a replaced kit, a new reportlab)
    # would make a re-rendering differ from the paper in the subject's file.
    content: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    printed_at: Mapped[datetime]
    printed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    printed_by_name: Mapped[str] = mapped_column(String(200))
