"""Signed audit-trail reviews (AUD-09): a reviewer signs off one review report for one period."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
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
