"""Screening log, randomized subjects, their corrections and withdrawals (never deleted, RND-07/09,
REP-04)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from allocator.models.base import Base


class ScreeningEntry(Base):
    """A screening of one patient. Ineligible patients stay here and never reach a slot (RND-06).
    Identified only by the site's pseudonymous screening number (DIB-06)."""

    __tablename__ = "screening_entry"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    screening_number: Mapped[str] = mapped_column(String(32))
    screened_at: Mapped[datetime]
    screened_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    screened_by_name: Mapped[str] = mapped_column(String(200))
    eligible: Mapped[bool] = mapped_column(Boolean)
    answers: Mapped[dict[str, Any]] = mapped_column(JSON)
    failures: Mapped[list[Any]] = mapped_column(JSON)


class Subject(Base):
    """A randomized subject. Never updated or deleted: corrections are SubjectCorrection rows."""

    __tablename__ = "subject"
    __table_args__ = (
        UniqueConstraint("trial_id", "screening_number"),  # one subject per screening number
        UniqueConstraint("trial_id", "subject_number"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    screening_entry_id: Mapped[int] = mapped_column(ForeignKey("screening_entry.id"), unique=True)
    screening_number: Mapped[str] = mapped_column(String(32))
    subject_number: Mapped[str] = mapped_column(String(32))
    list_id: Mapped[int] = mapped_column(ForeignKey("randomization_list.id"))
    stratum_id: Mapped[int] = mapped_column(ForeignKey("stratum.id"))
    # One subject per slot, one slot per subject (RND-07/08). Null only for minimization.
    slot_id: Mapped[int | None] = mapped_column(ForeignKey("slot.id"), unique=True)
    minimization_decision_id: Mapped[int | None] = mapped_column(
        ForeignKey("minimization_decision.id"), unique=True
    )
    randomization_number: Mapped[str] = mapped_column(String(16))
    strata: Mapped[dict[str, Any]] = mapped_column(JSON)  # as entered at randomization (RND-09)
    randomized_at: Mapped[datetime]
    randomized_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    randomized_by_name: Mapped[str] = mapped_column(String(200))


class SubjectCorrection(Base):
    """A reasoned, attributed correction: randomized in error, or a corrected stratum value
    recorded beside the one used at randomization (RND-07, RND-09, DIB-03)."""

    __tablename__ = "subject_correction"

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # randomized_in_error | stratum
    field: Mapped[str | None] = mapped_column(String(64))
    old_value: Mapped[Any] = mapped_column(JSON, nullable=True)
    new_value: Mapped[Any] = mapped_column(JSON, nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    investigator_agreement_ref: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[datetime]
    by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    by_name: Mapped[str] = mapped_column(String(200))
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signature.id"))


class SubjectWithdrawal(Base):
    """A subject's withdrawal from the trial's treatment or follow-up: reasoned, signed, at most one
    per subject, never changed (REP-04, CONSORT 2025 item 22b). The subject stays randomized and in
    every report (intention to treat); no further dose is dispensed or given."""

    __tablename__ = "subject_withdrawal"

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), unique=True)  # one per subject
    # treatment_discontinued | consent_withdrawn | lost_to_follow_up
    kind: Mapped[str] = mapped_column(String(32))
    effective_date: Mapped[date] = mapped_column(Date)  # the site's calendar date
    reason: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime]
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    recorded_by_name: Mapped[str] = mapped_column(String(200))
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))
    # DIB-03: recorded by anyone but the site's investigator, the withdrawal needs the reference of
    # the investigator's agreement (as a stratum correction does).
    investigator_agreement_ref: Mapped[str | None] = mapped_column(String(200), default=None)
