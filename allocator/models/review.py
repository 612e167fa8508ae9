"""Signed audit-trail reviews (AUD-09): a reviewer signs off one review report for one period."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from allocator.models.base import Base


class AuditReview(Base):
    """Append-only. `report` names the review report (unblindings, arm reads, failed logins...);
    `entries` is how many rows it listed for the period, and `content_sha256` their digest, so that
    what was reviewed can be shown again and compared."""

    __tablename__ = "audit_review"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    report: Mapped[str] = mapped_column(String(40))
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    entries: Mapped[int] = mapped_column(Integer)
    content_sha256: Mapped[str] = mapped_column(String(64))
    comment: Mapped[str] = mapped_column(Text, default="")
    reviewed_at: Mapped[datetime]
    reviewed_by_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    reviewed_by_name: Mapped[str] = mapped_column(String(200))
    signature_id: Mapped[int] = mapped_column(ForeignKey("signature.id"))


class ReportJob(Base):
    """A long report PDF built in the background (issue 21): who asked, the report and its filters,
    its progress and, once built, the file. Kept (never deleted); its status and progress change
    while it is built. The file is given to its asker only, and each download is audited as a
    direct download is (`report.exported`)."""

    __tablename__ = "report_job"

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    report: Mapped[str] = mapped_column(String(40))
    version: Mapped[str] = mapped_column(String(16))  # blinded | review | restricted
    fmt: Mapped[str] = mapped_column(String(8))
    language: Mapped[str] = mapped_column(String(8))
    filters: Mapped[str] = mapped_column(Text)  # the download's query arguments, JSON
    site_code: Mapped[str | None] = mapped_column(String(40))
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    requested_by_name: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(12))  # running | done | failed
    rows_total: Mapped[int] = mapped_column(Integer)
    rows_done: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[datetime]  # the worker's last sign of life: a job silent too long has failed
    finished_at: Mapped[datetime | None]
    filename: Mapped[str | None] = mapped_column(String(200))
    content: Mapped[bytes | None] = mapped_column(LargeBinary)
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
