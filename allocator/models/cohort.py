"""An observational study's participants and their planned samples (issue 20). Never updated or
deleted: a participant of a cohort is registered, not randomized, so it has no list, stratum, slot
or randomization number and is not a `Subject`."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from allocator.models.base import Base


class Registration(Base):
    """An eligible patient registered in an observational study, with its screening entry."""

    __tablename__ = "registration"
    __table_args__ = (
        UniqueConstraint("trial_id", "screening_number"),  # one participant per screening number
        UniqueConstraint("trial_id", "subject_number"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    screening_entry_id: Mapped[int] = mapped_column(ForeignKey("screening_entry.id"), unique=True)
    screening_number: Mapped[str] = mapped_column(String(32))
    subject_number: Mapped[str] = mapped_column(String(32))
    anchor_date: Mapped[date] = mapped_column(Date)  # the schedule's day 0 (the definition's anchor)
    registered_at: Mapped[datetime]
    registered_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    registered_by_name: Mapped[str] = mapped_column(String(200))


class PlannedSample(Base):
    """One sample of a registered participant, planned at registration on a central-lab working day
    within its window (the definition's `[sampling]` timepoint)."""

    __tablename__ = "planned_sample"
    __table_args__ = (UniqueConstraint("registration_id", "label"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    registration_id: Mapped[int] = mapped_column(ForeignKey("registration.id"), index=True)
    label: Mapped[str] = mapped_column(String(8))  # D3
    kit_type: Mapped[str] = mapped_column(String(16))
    due_date: Mapped[date] = mapped_column(Date)  # anchor + day
    window_end: Mapped[date] = mapped_column(Date)  # anchor + last_day
    planned_date: Mapped[date] = mapped_column(Date)  # the first lab working day from due_date


class LabClosure(Base):
    """A day the central lab of an observational study is closed, entered by the people who manage
    the study's sites (beyond weekends and public holidays). Samples planned after it is entered
    avoid it; nothing already planned moves. Never deleted (append-only): a closure entered by
    mistake is withdrawn (LabClosureWithdrawal), and the day may then be closed again, so a day
    has at most one closure that is not withdrawn (services/lab_calendar.py, under the trial's lock)."""

    __tablename__ = "lab_closure"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    day: Mapped[date] = mapped_column(Date)
    reason: Mapped[str] = mapped_column(String(500))
    entered_at: Mapped[datetime]
    entered_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    entered_by_name: Mapped[str] = mapped_column(String(200))


class LabClosureWithdrawal(Base):
    """A lab closure withdrawn, with the reason and who did it: the closure no longer counts for
    the samples planned from then on (nothing already planned moves). Append-only."""

    __tablename__ = "lab_closure_withdrawal"

    id: Mapped[int] = mapped_column(primary_key=True)
    closure_id: Mapped[int] = mapped_column(ForeignKey("lab_closure.id"), unique=True)
    reason: Mapped[str] = mapped_column(String(500))
    withdrawn_at: Mapped[datetime]
    withdrawn_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    withdrawn_by_name: Mapped[str] = mapped_column(String(200))
